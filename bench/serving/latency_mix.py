"""Latency of 1-row requests while 512-row requests run on the same model server.

A batch is predicted either on the event loop (up to ``MLOPS_RUNTIME_INLINE_PREDICT_MAX_ROWS``
rows) or in the runtime's predict thread; a 512-row request predicted on the loop holds up every
1-row request behind it. This script measures that, side by side in one run, for:

* ``inline<=512``: every batch up to 512 rows on the loop (the runtime's default before this
  script existed);
* ``thread>N``: batches over N rows in the predict thread (``--thresholds``, default 64);
* ``@REF``: optionally (``--ref``), the runtime as it was at a git commit (extracted with
  ``git archive`` into a temporary directory and put first on ``PYTHONPATH``), with its defaults.

For each configuration one server process (``mlops-runtime serve``, REST only, loopback) is
started and loaded with, in this process on uvloop, ``--small`` connections each sending 1-row
requests one after another and ``--big`` connections each sending 512-row requests one after
another, for ``--duration`` seconds; then the 1-row load alone. The configurations are measured
in turn, ``--rounds`` times, and the median of each figure over the rounds is printed.

The client is the router's keep-alive HTTP/1.1 client (``mlops_runtime.router.upstream``), so
the client costs little next to the server. Run with the project venv::

    .venv/bin/python bench/serving/latency_mix.py [--model lr|rf] [--duration 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import stop  # noqa: E402  (the serving benchmark's process helpers)

SMALL_ROWS, BIG_ROWS = 1, 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(workdir: Path, kind: str) -> tuple[Path, list[list[float]]]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    trusted = {}
    if kind == "lr":
        model = LogisticRegression(max_iter=500).fit(X, y)
    else:  # the examples' model (examples/iris/modeldeployment-loop.yaml: 50 trees)
        model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
        trusted = {"skops_trusted_types": ["sklearn.tree._tree.Tree"]}  # trained right here
    path = workdir / f"iris-{kind}"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)),
                              **trusted)  # fmt: skip
    return path, X.tolist()


def body(rows: list[list[float]], n: int) -> bytes:
    block = [rows[i % len(rows)] for i in range(n)]
    return json.dumps({"inputs": [{"name": "input-0", "shape": [n, 4], "datatype": "FP64",
                                   "data": [x for r in block for x in r]}]}).encode()  # fmt: skip


def old_source(ref: str, workdir: Path) -> Path:
    """``serving-runtime/`` of ``ref``, extracted; its ``mlops_runtime`` shadows the installed."""
    tar = subprocess.run(["git", "-C", str(REPO), "archive", ref, "serving-runtime/mlops_runtime"],
                         check=True, capture_output=True).stdout  # fmt: skip
    dest = workdir / f"src-{ref.replace('/', '_')}"
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest / "serving-runtime"


def start(model: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlops_runtime.cli", "serve", "--model-uri", str(model),
           "--model-name", "iris", "--host", "127.0.0.1", "--port", str(port),
           "--grpc-port", "0", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300  # a loaded machine starts MLflow slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not ready after 300 s")


async def load(port: int, small: int, big: int, duration: float, bodies: dict[int, bytes]) -> dict:
    """Closed-loop clients for ``duration`` s; latencies of 1-row requests, counts of both."""
    from mlops_runtime.router.upstream import UpstreamPool

    pool = UpstreamPool(timeout_s=60)
    headers = [(b"content-type", b"application/json")]
    latencies: list[float] = []
    done = {SMALL_ROWS: 0, BIG_ROWS: 0}
    errors = 0
    stop_at = time.perf_counter() + duration

    async def client(rows: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            response = await pool.request("127.0.0.1", port, "POST", "/v2/models/iris/infer",
                                          headers, bodies[rows])  # fmt: skip
            if response.status != 200:
                errors += 1
            elif rows == SMALL_ROWS:
                latencies.append(time.perf_counter() - t)
            done[rows] += 1

    await asyncio.gather(*(client(SMALL_ROWS) for _ in range(small)),
                         *(client(BIG_ROWS) for _ in range(big)))  # fmt: skip
    await pool.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "small_rps": done[SMALL_ROWS] / duration,
            "big_rps": done[BIG_ROWS] / duration, "errors": errors}  # fmt: skip


def measure(port: int, args: argparse.Namespace, bodies: dict[int, bytes]) -> dict:
    import uvloop

    warm = uvloop.run(load(port, args.small, args.big, 1.0, bodies))
    assert warm["errors"] == 0, warm
    mixed = uvloop.run(load(port, args.small, args.big, args.duration, bodies))
    alone = uvloop.run(load(port, args.small, 0, args.duration, bodies))
    return {"mixed": mixed, "alone": alone}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["lr", "rf"], default="lr")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=8, help="connections sending 1 row")
    parser.add_argument("--big", type=int, default=2, help="connections sending 512 rows")
    parser.add_argument("--thresholds", default="64", help="inline_predict_max_rows to compare")
    parser.add_argument("--ref", help="also measure the runtime of this git commit (defaults)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="latency-mix-"))
    model, rows = build_model(workdir, args.model)
    bodies = {SMALL_ROWS: body(rows, SMALL_ROWS), BIG_ROWS: body(rows, BIG_ROWS)}
    configs: list[tuple[str, dict[str, str]]] = []
    if args.ref:
        path = old_source(args.ref, workdir)
        configs.append((f"@{args.ref}", {"PYTHONPATH": str(path)}))
    configs.append(("inline<=512", {"MLOPS_RUNTIME_INLINE_PREDICT_MAX_ROWS": "512"}))
    for n in args.thresholds.split(","):
        configs.append((f"thread>{n}", {"MLOPS_RUNTIME_INLINE_PREDICT_MAX_ROWS": n}))

    results: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for r in range(args.rounds):
        for name, env in configs:
            port = free_port()
            proc = start(model, port, env, workdir / f"{name}.log")
            try:
                results[name].append(measure(port, args, bodies))
            finally:
                stop(proc)
            m = results[name][-1]["mixed"]
            print(f"round {r + 1} {name:>12}: mixed p99 {m['p99_ms']:.2f} ms", flush=True)

    def med(name: str, phase: str, key: str) -> float:
        return statistics.median(x[phase][key] for x in results[name])

    print(f"\nmodel {args.model}; {args.small} connections x 1 row, {args.big} x {BIG_ROWS} rows; "
          f"{args.duration:g} s each; median of {args.rounds} rounds; load "
          f"{os.getloadavg()[0]:.1f}\n")  # fmt: skip
    head = ["", *[name for name, _ in configs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, phase, key, fmt in [
        ("1-row p50, mixed (ms)", "mixed", "p50_ms", "{:.2f}"),
        ("1-row p99, mixed (ms)", "mixed", "p99_ms", "{:.2f}"),
        ("1-row req/s, mixed", "mixed", "small_rps", "{:.0f}"),
        ("512-row req/s, mixed", "mixed", "big_rps", "{:.0f}"),
        ("1-row p50, alone (ms)", "alone", "p50_ms", "{:.2f}"),
        ("1-row p99, alone (ms)", "alone", "p99_ms", "{:.2f}"),
        ("1-row req/s, alone", "alone", "small_rps", "{:.0f}"),
        ("errors (mixed)", "mixed", "errors", "{:.0f}"),
        ("errors (alone)", "alone", "errors", "{:.0f}"),
    ]:
        cells = [fmt.format(med(name, phase, key)) for name, _ in configs]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
