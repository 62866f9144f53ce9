"""The router's added latency, without wrk: p50 through ``mlops-runtime router`` minus p50 direct.

Run with the project venv: ``.venv/bin/python bench/router/overhead.py [--requests 3000]``.

The same setup as bench/serving/run.py's router measurement (an iris LogisticRegression served
by ``mlops-runtime serve``, one ``mlops-runtime router`` in front of it with a single variant,
both on loopback), but the load is generated in this process — one request at a time over a
keep-alive connection — so it runs where wrk and MLServer are not installed. Direct and routed
runs alternate over several rounds; the best p50 of each is kept. Asserts nothing but correct
answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "serving"), str(HERE.parent.parent / "serving-runtime")]

from loadgen import BODY  # noqa: E402
from servers import build_models, free_port, start, stop  # noqa: E402
from servers import wait_url as wait_ready  # noqa: E402

from mlops_runtime.router.upstream import UpstreamPool  # noqa: E402

PATH = "/v2/models/iris/infer"
HEADERS = [(b"content-type", b"application/json")]


async def p50s(ports: dict[str, int], n: int, rounds: int) -> dict[str, list[float]]:
    """p50 in µs of each round, per target, targets alternating."""
    pool = UpstreamPool()
    body = orjson.dumps(BODY)
    out: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for port in ports.values():  # warm up
            for _ in range(300):
                await pool.request("127.0.0.1", port, "POST", PATH, HEADERS, body)
        for r in range(rounds):
            for name in list(ports)[:: 1 if r % 2 == 0 else -1]:
                lat = []
                for _ in range(n):
                    t = time.perf_counter()
                    resp = await pool.request("127.0.0.1", ports[name], "POST", PATH, HEADERS,
                                              body)  # fmt: skip
                    lat.append(time.perf_counter() - t)
                    if resp.status != 200 or orjson.loads(resp.body)["outputs"][0]["data"] != [0]:
                        raise RuntimeError(f"{name}: bad answer {resp.status} {resp.body[:80]!r}")
                p50 = sorted(lat)[len(lat) // 2] * 1e6
                out[name].append(p50)
                print(f"round {r + 1} {name:6s} p50 {p50:7.1f} µs", flush=True)
    finally:
        await pool.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="requests per target per round")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    workdir = Path(tempfile.mkdtemp(prefix="bench-router-"))
    _, mlflow_dir, _ = build_models(workdir)
    direct, routed = free_port(), free_port()
    config = workdir / "router.json"
    config.write_text(json.dumps({"variants": [
        {"name": "only", "weight": 1, "endpoints": [f"http://127.0.0.1:{direct}"]}]}))  # fmt: skip
    procs = [
        start([str(bindir / "mlops-runtime"), "serve"], {
            "MLOPS_RUNTIME_MODEL_URI": str(mlflow_dir), "MLOPS_RUNTIME_MODEL_NAME": "iris",
            "MLOPS_RUNTIME_HOST": "127.0.0.1", "MLOPS_RUNTIME_PORT": str(direct),
            "MLOPS_RUNTIME_LOG_LEVEL": "warning",
            # HTTP only: the router proxies REST, and a gRPC listener on the default 8081 could
            # clash with another server on this machine
            "MLOPS_RUNTIME_GRPC_PORT": "0"}, workdir / "serve.log"),
        start([str(bindir / "mlops-runtime"), "router"], {
            "MLOPS_ROUTER_CONFIG": str(config), "MLOPS_ROUTER_HOST": "127.0.0.1",
            "MLOPS_ROUTER_PORT": str(routed), "MLOPS_ROUTER_LOG_LEVEL": "warning"},
            workdir / "router.log"),
    ]  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{direct}/v2/health/ready", procs[0])
        wait_ready(f"http://127.0.0.1:{routed}/router/ready", procs[1])
        result = uvloop.run(p50s({"direct": direct, "router": routed}, args.requests,
                                 args.rounds))  # fmt: skip
    finally:
        for proc in procs:
            stop(proc)
    d, r = min(result["direct"]), min(result["router"])
    print(f"\nRouter overhead ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, one request at a time, "
          f"{args.requests} per run, best of {args.rounds}): p50 {r / 1000:.2f} ms through the "
          f"router vs {d / 1000:.2f} ms direct = **+{(r - d) / 1000:.2f} ms** "
          f"(ratio {r / d:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
