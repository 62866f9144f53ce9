"""Serving benchmark: mlops-runtime vs MLServer 1.7 (mlserver-sklearn), side by side in one run.

Run with the project venv: ``.venv/bin/python bench/serving/run.py [--duration 10]``.

* the same scikit-learn iris LogisticRegression, saved once as an MLflow model (for
  mlops-runtime) and as a joblib file (for MLServer);
* one server process each (MLServer with ``parallel_workers: 0``, so inference runs in its one
  process too), each on loopback;
* wrk POSTs the same V2 infer body (bench/serving/infer.lua) at 1, 16 and 64 connections; the
  servers are measured alternately at each level;
* the floor is raw ``model.predict`` on one row in this process;
* the router's cost is p50 through ``mlops-runtime router`` minus p50 direct, at 1 connection.

MLServer comes from PyPI into its own venv, ``bench/.venv-mlserver`` (created if missing), because
its pins conflict with the project's. wrk is the Debian package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MLSERVER_VENV = REPO / "bench" / ".venv-mlserver"
LUA = HERE / "infer.lua"
BODY = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32",
                    "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_mlserver() -> Path:
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        pip = str(MLSERVER_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "mlserver==1.7.*", "mlserver-sklearn==1.7.*"],
                       check=True)  # fmt: skip
    return exe


def build_models(workdir: Path):  # noqa: ANN201
    import joblib
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    mlflow_dir = workdir / "mlflow-iris"
    mlflow.sklearn.save_model(
        model, str(mlflow_dir), signature=infer_signature(X, model.predict(X))
    )
    ms_dir = workdir / "mlserver"
    (ms_dir / "iris").mkdir(parents=True)
    joblib.dump(model, ms_dir / "iris" / "model.joblib")
    (ms_dir / "iris" / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))  # fmt: skip
    return model, mlflow_dir, ms_dir


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def check_infer(base: str) -> dict:
    req = urllib.request.Request(f"{base}/v2/models/iris/infer", data=json.dumps(BODY).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def wrk(url: str, connections: int, duration: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(LUA), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stats = json.loads(re.search(r"^JSON (.*)$", out, re.M).group(1))
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def floor(model) -> tuple[float, float]:  # noqa: ANN001
    import numpy as np

    row = np.asarray([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    for _ in range(200):
        model.predict(row)
    n, samples = 2000, []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            model.predict(row)
        samples.append((time.perf_counter() - t) / n)
    per_call = sorted(samples)[len(samples) // 2]
    return 1 / per_call, per_call * 1e6


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument(
        "--rounds", type=int, default=1, help="alternating rounds per level (best kept)"
    )
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    mlserver = ensure_mlserver()
    bindir = Path(sys.executable).parent
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model, mlflow_dir, ms_dir = build_models(workdir)

    ours_port, ms_port, router_port = free_port(), free_port(), free_port()
    (ms_dir / "settings.json").write_text(json.dumps({
        "http_port": ms_port, "grpc_port": free_port(), "metrics_port": free_port(),
        "host": "127.0.0.1", "parallel_workers": 0, "debug": False}))  # fmt: skip
    router_cfg = workdir / "router.json"
    router_cfg.write_text(
        json.dumps(
            {
                "variants": [
                    {"name": "only", "weight": 1, "endpoints": [f"http://127.0.0.1:{ours_port}"]}
                ]
            }
        )
    )
    procs = {
        "ours": start(
            [str(bindir / "mlops-runtime"), "serve"],
            {
                "MLOPS_RUNTIME_MODEL_URI": str(mlflow_dir),
                "MLOPS_RUNTIME_MODEL_NAME": "iris",
                "MLOPS_RUNTIME_HOST": "127.0.0.1",
                "MLOPS_RUNTIME_PORT": str(ours_port),
                "MLOPS_RUNTIME_LOG_LEVEL": "warning",
            },
            workdir / "ours.log",
        ),  # fmt: skip
        "mlserver": start([str(mlserver), "start", str(ms_dir)], {}, workdir / "mlserver.log"),
        "router": start(
            [str(bindir / "mlops-runtime"), "router"],
            {
                "MLOPS_ROUTER_CONFIG": str(router_cfg),
                "MLOPS_ROUTER_HOST": "127.0.0.1",
                "MLOPS_ROUTER_PORT": str(router_port),
                "MLOPS_ROUTER_LOG_LEVEL": "warning",
            },
            workdir / "router.log",
        ),  # fmt: skip
    }
    try:
        urls = {"ours": f"http://127.0.0.1:{ours_port}", "mlserver": f"http://127.0.0.1:{ms_port}",
                "router": f"http://127.0.0.1:{router_port}"}  # fmt: skip
        wait_ready(urls["ours"] + "/v2/health/ready", procs["ours"])
        wait_ready(urls["mlserver"] + "/v2/health/ready", procs["mlserver"])
        wait_ready(urls["router"] + "/router/ready", procs["router"])
        for name in ("ours", "mlserver", "router"):
            out = check_infer(urls[name])
            assert out["outputs"][0]["data"] == [0], (name, out)
        for name in ("ours", "mlserver"):  # warm up
            wrk(urls[name] + "/v2/models/iris/infer", 16, 2)
        results: dict[tuple[str, int], dict] = {}
        levels = [int(x) for x in args.levels.split(",")]
        for _ in range(args.rounds):
            for c in levels:
                for name in ("mlserver", "ours") if c % 2 else ("ours", "mlserver"):
                    stats = wrk(urls[name] + "/v2/models/iris/infer", c, args.duration)
                    best = results.get((name, c))
                    if best is None or stats["rps"] > best["rps"]:
                        results[(name, c)] = stats
                    print(f"{name:8s} c={c:<3d} {stats['rps']:9.0f} req/s  "
                          f"p50 {stats['p50_us'] / 1000:6.2f} ms  p99 {stats['p99_us'] / 1000:7.2f} ms"
                          f"  errors {stats['errors'] + stats['non2xx']}",
                          flush=True)  # fmt: skip
        router_runs = [wrk(urls["router"] + "/v2/models/iris/infer", 1, args.duration)
                       for _ in range(args.rounds)]  # fmt: skip
        direct_runs = [wrk(urls["ours"] + "/v2/models/iris/infer", 1, args.duration)
                       for _ in range(args.rounds)]  # fmt: skip
        floor_rps, floor_us = floor(model)
    finally:
        for proc in procs.values():
            stop(proc)

    router_p50 = min(r["p50_us"] for r in router_runs) / 1000
    direct_p50 = min(r["p50_us"] for r in direct_runs) / 1000
    lines = [
        f"Serving benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, wrk -t1, "
        f"{args.duration}s per run, best of {args.rounds})",
        "",
        "| connections | mlops-runtime req/s | MLServer req/s | ratio | mlops-runtime p50 / p99 (ms) "
        "| MLServer p50 / p99 (ms) | p99 no worse | errors (ours / MLServer) |",
        "|---:|---:|---:|---:|---|---|:-:|:-:|",
    ]
    for c in levels:
        o, m = results[("ours", c)], results[("mlserver", c)]
        lines.append(
            f"| {c} | {o['rps']:.0f} | {m['rps']:.0f} | **{o['rps'] / m['rps']:.2f}x** "
            f"| {o['p50_us'] / 1000:.2f} / {o['p99_us'] / 1000:.2f} "
            f"| {m['p50_us'] / 1000:.2f} / {m['p99_us'] / 1000:.2f} "
            f"| {'yes' if o['p99_us'] <= m['p99_us'] else 'NO'} "
            f"| {o['errors'] + o['non2xx']} / {m['errors'] + m['non2xx']} |"
        )
    lines += [
        "",
        "errors = wrk socket errors/timeouts (2 s) plus non-2xx responses. "
        "MLServer runs with `parallel_workers: 0` (inference in its one process).",
        "",
        f"Floor: raw `model.predict` on one row in-process: {floor_us:.1f} µs per call "
        f"({floor_rps:.0f} calls/s).",
        f"Router overhead at 1 connection: p50 {router_p50:.2f} ms through the router vs "
        f"{direct_p50:.2f} ms direct = **+{router_p50 - direct_p50:.2f} ms**.",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    Path(args.out).write_text(table + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
