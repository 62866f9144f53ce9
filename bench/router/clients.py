"""Router upstream clients side by side: the hand-written ``UpstreamPool`` vs httpx vs aiohttp.

Run with the project venv: ``.venv/bin/python bench/router/clients.py [--requests 2000]``.

* one upstream server process on loopback: uvicorn (uvloop + httptools) with a raw ASGI app that
  answers every POST with the same small JSON body, like a model server's V2 infer response;
* in this process, on uvloop like the router, each client POSTs the same V2 infer body with the
  same headers over keep-alive connections:

  - ``UpstreamPool`` (mlops_runtime.router.upstream, asyncio protocol + httptools);
  - ``httpx.AsyncClient`` (the project's core dependency), as installed and with ``sniffio``
    present (httpcore re-imports it on every request and the project does not install it);
  - ``aiohttp.ClientSession``;

* sequential requests (one at a time: what the router adds to each request's latency) give
  p50 / p99 per request; 16 concurrent workers give throughput;
* the clients are measured in alternating order over several rounds, so they see the same noise;
  the best round of each is kept, and the ratios are printed.

This is a benchmark, not a test: it asserts nothing except that every response is a 200 with
the expected body.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "serving-runtime"))

from mlops_runtime.router.upstream import HOP_BY_HOP, UpstreamPool  # noqa: E402

BODY = (b'{"inputs":[{"name":"predict","shape":[1,4],"datatype":"FP32",'
        b'"data":[5.1,3.5,1.4,0.2]}]}')  # fmt: skip
RESPONSE = (b'{"model_name":"iris","model_version":"1","id":"x","outputs":[{"name":"predict",'
            b'"shape":[1],"datatype":"INT64","data":[0]}]}')  # fmt: skip
HEADERS = [(b"content-type", b"application/json"), (b"user-agent", b"bench"),
           (b"x-user", b"u-42")]  # fmt: skip

UPSTREAM_APP = f"""
RESPONSE = {RESPONSE!r}
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({{"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(RESPONSE))]}})
    await send({{"type": "http.response.body", "body": RESPONSE}})
"""

Request = Callable[[], Awaitable[tuple[int, bytes]]]
_REAL_SNIFFIO = importlib.util.find_spec("sniffio")
_SNIFFIO = types.ModuleType("sniffio")
_SNIFFIO.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(port: int, workdir: Path) -> subprocess.Popen:
    (workdir / "bench_upstream.py").write_text(UPSTREAM_APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench_upstream:app", "--host", "127.0.0.1",
         "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
         "--log-level", "warning"],
        cwd=workdir,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/",
                                                          data=b"{}"), timeout=1)  # fmt: skip
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("upstream did not start")


def forwarded_headers() -> list[tuple[bytes, bytes]]:
    """The request headers as the router forwards them (hop-by-hop ones dropped)."""
    return [(k, v) for k, v in HEADERS if k not in HOP_BY_HOP]


async def make_clients(port: int) -> tuple[dict[str, Request], Callable[[], Awaitable[None]]]:
    """One request function per client, all sending the same request; and a closer."""
    target = "/v2/models/iris/infer"
    url = f"http://127.0.0.1:{port}{target}"
    headers = forwarded_headers()

    pool = UpstreamPool(timeout_s=30)

    async def ours() -> tuple[int, bytes]:
        r = await pool.request("127.0.0.1", port, "POST", target, headers, BODY)
        return r.status, r.body

    hx = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=256,
                                               max_connections=None), timeout=30)  # fmt: skip

    async def with_httpx() -> tuple[int, bytes]:
        r = await hx.post(url, content=BODY, headers=headers)
        return r.status_code, r.content

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=30), skip_auto_headers=("User-Agent",),
        auto_decompress=False,
    )  # fmt: skip
    aio_headers = [(k.decode(), v.decode()) for k, v in headers]

    async def with_aiohttp() -> tuple[int, bytes]:
        async with session.post(url, data=BODY, headers=aio_headers) as r:
            return r.status, await r.read()

    async def with_httpx_as_installed() -> tuple[int, bytes]:
        if _REAL_SNIFFIO is None:
            sys.modules.pop("sniffio", None)
        return await with_httpx()

    async def with_httpx_sniffio() -> tuple[int, bytes]:
        # httpcore imports sniffio on each lock operation; without it installed (as in this
        # project's environment) every request pays several failed imports. This variant
        # stands in a trivial sniffio: a lower bound of httpx's cost with sniffio installed.
        sys.modules["sniffio"] = _SNIFFIO
        return await with_httpx()

    async def close() -> None:
        await pool.close()
        await hx.aclose()
        await session.close()

    clients = {"UpstreamPool": ours, "httpx": with_httpx_as_installed, "httpx+sniffio": with_httpx_sniffio,
               "aiohttp": with_aiohttp}
    return clients, close


async def sequential(request: Request, n: int) -> list[float]:
    """Per-request latencies in seconds, one request at a time."""
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        status, body = await request()
        out.append(clock() - t)
        if status != 200 or body != RESPONSE:
            raise RuntimeError(f"bad response {status} {body[:80]!r}")
    return out


async def concurrent(request: Request, n: int, workers: int) -> float:
    """Requests per second with ``workers`` requests in flight."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, body = await request()
            if status != 200 or body != RESPONSE:
                raise RuntimeError(f"bad response {status}")

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return n / (time.perf_counter() - t)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(port: int, n: int, rounds: int, workers: int) -> dict[str, dict[str, float]]:
    clients, close = await make_clients(port)
    try:
        for request in clients.values():  # warm up: connections, code paths
            await sequential(request, 200)
            await concurrent(request, 400, workers)
        best: dict[str, dict[str, float]] = {}
        names = list(clients)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                lat = await sequential(clients[name], n)
                rps = await concurrent(clients[name], 2 * n, workers)
                p50, p99 = pct(lat, 0.50) * 1e6, pct(lat, 0.99) * 1e6
                print(f"round {r + 1} {name:13s} p50 {p50:7.1f} us  p99 {p99:7.1f} us  "
                      f"c={workers} {rps:8.0f} req/s", flush=True)  # fmt: skip
                b = best.setdefault(name, {"p50": p50, "p99": p99, "rps": rps})
                b["p50"], b["p99"], b["rps"] = min(b["p50"], p50), min(b["p99"], p99), max(
                    b["rps"], rps)
        return best
    finally:
        await close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16, help="concurrency of the throughput run")
    args = ap.parse_args()
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        upstream = start_upstream(port, Path(tmp))
        try:
            best = uvloop.run(measure(port, args.requests, args.rounds, args.workers))
        finally:
            upstream.terminate()
            upstream.wait(10)
    ours = best["UpstreamPool"]
    print(f"\nRouter upstream clients ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{args.requests} sequential + {2 * args.requests} concurrent requests per round, "
          f"best of {args.rounds}; httpx {httpx.__version__}, aiohttp {aiohttp.__version__})\n")
    print(f"| client | p50 (µs) | p99 (µs) | req/s at c={args.workers} | p50 vs UpstreamPool "
          "| req/s vs UpstreamPool |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, b in best.items():
        print(f"| {name} | {b['p50']:.0f} | {b['p99']:.0f} | {b['rps']:.0f} "
              f"| {b['p50'] / ours['p50']:.2f}x (+{b['p50'] - ours['p50']:.0f} µs) "
              f"| {b['rps'] / ours['rps']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
