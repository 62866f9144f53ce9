"""Serving benchmark: mlops-runtime vs MLServer 1.7 (mlserver-sklearn), side by side in one run.

Three parts, all against the same two server processes:

1. REST JSON (wrk) at 1/16/64 connections — ours vs MLServer;
2. gRPC ModelInfer (ghz, one HTTP/2 connection carrying 1/16/64 concurrent streams) — ours vs
   MLServer's gRPC server, the same request message (typed ``fp32_contents``) to both;
3. REST with a 1,000-row request: JSON vs the binary tensor data extension (ours; MLServer's JSON
   alongside for scale).

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
BODY_LUA = HERE / "body.lua"
GHZ_DIR = REPO / "bench" / ".venv-ghz"
GHZ_VERSION = "v0.120.0"
PROTO = REPO / "serving-runtime" / "mlops_runtime" / "oip" / "open_inference.proto"
GRPC_REQUEST = {"model_name": "iris", "inputs": [
    {"name": "predict", "datatype": "FP32", "shape": [1, 4],
     "contents": {"fp32_contents": [5.1, 3.5, 1.4, 0.2]}}]}  # fmt: skip
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


def ensure_ghz() -> Path | None:
    """ghz (gRPC load generator, Go): on PATH, else built once from the Go module proxy into
    ``bench/.venv-ghz/bin`` (git-ignored); ``None`` when neither works."""
    found = shutil.which("ghz")
    if found:
        return Path(found)
    exe = GHZ_DIR / "bin" / "ghz"
    if not exe.exists() and shutil.which("go"):
        env = {**os.environ, "GOBIN": str(exe.parent)}
        subprocess.run(["go", "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"],
                       env=env, check=False, cwd=tempfile.gettempdir())  # fmt: skip
    return exe if exe.exists() else None


def protocol_proto(workdir: Path) -> Path:
    """Our .proto under the protocol's package ``inference`` (ghz derives the RPC path from the
    package; the runtime's own package differs only to coexist with other OIP modules)."""
    text = PROTO.read_text().replace("package mlops.oip.v2;", "package inference;")
    out = workdir / "inference.proto"
    out.write_text(text)
    return out


def ghz(exe: Path, proto: Path, address: str, concurrency: int, duration: int) -> dict:
    out = subprocess.run(
        [str(exe), "--insecure", "--proto", str(proto),
         "--call", "inference.GRPCInferenceService.ModelInfer", "-d", json.dumps(GRPC_REQUEST),
         "-c", str(concurrency), "--connections", "1", "-z", f"{duration}s",
         "--timeout", "2s", "--format", "json", address],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads(out.stdout)
    pct = {d["percentage"]: d["latency"] / 1000 for d in report.get("latencyDistribution") or []}
    codes = dict(report.get("statusCodeDistribution") or {})
    # ghz cuts the calls still in flight when the duration ends (at most one per stream) and
    # counts them as Unavailable: those are not the server's errors
    codes["Unavailable"] = max(0, codes.get("Unavailable", 0) - concurrency)
    return {"rps": report["rps"], "p50_us": pct.get(50, 0), "p99_us": pct.get(99, 0),
            "errors": sum(v for k, v in codes.items() if k != "OK"), "non2xx": 0}  # fmt: skip


def rows_1000() -> "np.ndarray":  # noqa: F821, UP037
    import numpy as np
    from sklearn.datasets import load_iris

    X, _ = load_iris(return_X_y=True)
    return np.resize(X, (1000, 4)).astype(np.float32)


def write_bodies(workdir: Path) -> dict[str, tuple[Path, int | None]]:
    """The 1,000-row request as JSON and as binary tensor data (response in kind)."""
    rows = rows_1000()
    plain = {"inputs": [{"name": "predict", "shape": [1000, 4], "datatype": "FP32",
                         "data": rows.ravel().tolist()}]}  # fmt: skip
    raw = rows.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "predict", "shape": [1000, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    (workdir / "json.body").write_bytes(json.dumps(plain).encode())
    (workdir / "binary.body").write_bytes(head + raw)
    return {"json": (workdir / "json.body", None), "binary": (workdir / "binary.body", len(head))}


def wrk_body(url: str, body: tuple[Path, int | None], connections: int, duration: int) -> dict:
    env = {**os.environ, "BENCH_BODY": str(body[0]),
           "BENCH_HEADER_LENGTH": "" if body[1] is None else str(body[1])}  # fmt: skip
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(BODY_LUA), url],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    stats = json.loads(re.search(r"^JSON (.*)$", out, re.M).group(1))
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def check_binary(base: str, body: tuple[Path, int | None]) -> None:
    """The binary request gets a binary response with 1,000 predictions."""
    req = urllib.request.Request(f"{base}/v2/models/iris/infer", data=body[0].read_bytes(),
                                 headers={"Inference-Header-Content-Length": str(body[1])})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        length = int(r.headers["Inference-Header-Content-Length"])
        payload = r.read()
    head = json.loads(payload[:length])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8000, head
    assert len(payload) == length + 8000


def check_grpc(address: str) -> None:
    import grpc

    from mlops_runtime.oip import Stub
    from mlops_runtime.oip import open_inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris")
    t = request.inputs.add(name="predict", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
    with grpc.insecure_channel(address) as channel:
        response = Stub(channel).ModelInfer(request, timeout=10)
    assert response.outputs[0].name == "predict", response


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


def _ms(stats: dict) -> str:
    return f"{stats['p50_us'] / 1000:.2f} / {stats['p99_us'] / 1000:.2f}"


def _ratio_rows(results: dict, levels: list[int]) -> list[str]:
    rows = []
    for c in levels:
        o, m = results[("ours", c)], results[("mlserver", c)]
        rows.append(
            f"| {c} | {o['rps']:.0f} | {m['rps']:.0f} | **{o['rps'] / m['rps']:.2f}x** "
            f"| {_ms(o)} | {_ms(m)} | {'yes' if o['p99_us'] <= m['p99_us'] else 'NO'} "
            f"| {o['errors'] + o['non2xx']} / {m['errors'] + m['non2xx']} |"
        )
    return rows


def rest_table(results: dict, levels: list[int]) -> list[str]:
    return [
        "REST JSON, one-row request (wrk -t1):",
        "",
        "| connections | mlops-runtime req/s | MLServer req/s | ratio | mlops-runtime p50 / p99 (ms) "
        "| MLServer p50 / p99 (ms) | p99 no worse | errors (ours / MLServer) |",
        "|---:|---:|---:|---:|---|---|:-:|:-:|",
        *_ratio_rows(results, levels),
        "",
        "errors = wrk socket errors/timeouts (2 s) plus non-2xx responses. "
        "MLServer runs with `parallel_workers: 0` (inference in its one process).",
        "",
    ]


def grpc_table(results: dict, levels: list[int]) -> list[str]:
    return [
        f"gRPC ModelInfer, one-row request (ghz {GHZ_VERSION}, one HTTP/2 connection, N "
        "concurrent streams; the same typed-contents message to both):",
        "",
        "| streams | mlops-runtime req/s | MLServer req/s | ratio | mlops-runtime p50 / p99 (ms) "
        "| MLServer p50 / p99 (ms) | p99 no worse | errors (ours / MLServer) |",
        "|---:|---:|---:|---:|---|---|:-:|:-:|",
        *_ratio_rows(results, levels),
        "",
        "errors = calls with a status other than OK (2 s deadline), less the calls ghz cuts off "
        "when the run's time is up (at most one per stream).",
        "",
    ]


def big_table(big: dict) -> list[str]:
    lines = [
        "REST, one 1,000-row FP32 request (4,000 values; wrk -t1): JSON vs the binary tensor data "
        "extension (request and response binary):",
        "",
        "| connections | server, body | req/s | p50 / p99 (ms) | vs mlops-runtime JSON | errors |",
        "|---:|---|---:|---|---:|:-:|",
    ]
    for c in (1, 16):
        base = big[("ours-json", c)]["rps"]
        for key, label in (("ours-binary", "mlops-runtime, binary"), ("ours-json", "mlops-runtime, JSON"),
                           ("mlserver-json", "MLServer, JSON")):  # fmt: skip
            s = big[(key, c)]
            lines.append(f"| {c} | {label} | {s['rps']:.0f} | {_ms(s)} | {s['rps'] / base:.2f}x "
                         f"| {s['errors'] + s['non2xx']} |")  # fmt: skip
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument(
        "--rounds", type=int, default=1, help="alternating rounds per level (best kept)"
    )
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--grpc-levels", default="1,16,64")
    ap.add_argument("--skip-rest", action="store_true", help="only gRPC and the 1,000-row part")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    ghz_exe = ensure_ghz()
    mlserver = ensure_mlserver()
    bindir = Path(sys.executable).parent
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model, mlflow_dir, ms_dir = build_models(workdir)

    ours_port, ms_port, router_port = free_port(), free_port(), free_port()
    ours_grpc, ms_grpc = free_port(), free_port()
    (ms_dir / "settings.json").write_text(json.dumps({
        "http_port": ms_port, "grpc_port": ms_grpc, "metrics_port": free_port(),
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
                "MLOPS_RUNTIME_GRPC_PORT": str(ours_grpc),
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
        bodies = write_bodies(workdir)
        check_binary(urls["ours"], bodies["binary"])
        grpc_addr = {"ours": f"127.0.0.1:{ours_grpc}", "mlserver": f"127.0.0.1:{ms_grpc}"}
        check_grpc(grpc_addr["ours"])
        check_grpc(grpc_addr["mlserver"])
        results: dict[tuple[str, int], dict] = {}
        levels = [int(x) for x in args.levels.split(",")]
        router_runs: list[dict] = []
        direct_runs: list[dict] = []
        if not args.skip_rest:
            for name in ("ours", "mlserver"):  # warm up
                wrk(urls[name] + "/v2/models/iris/infer", 16, 2)
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
        grpc_results: dict[tuple[str, int], dict] = {}
        grpc_levels = [int(x) for x in args.grpc_levels.split(",")]
        if ghz_exe is not None:
            proto = protocol_proto(workdir)
            for name in ("ours", "mlserver"):  # warm up
                ghz(ghz_exe, proto, grpc_addr[name], 16, 2)
            for _ in range(args.rounds):
                for c in grpc_levels:
                    for name in ("mlserver", "ours") if c % 2 else ("ours", "mlserver"):
                        stats = ghz(ghz_exe, proto, grpc_addr[name], c, args.duration)
                        best = grpc_results.get((name, c))
                        if best is None or stats["rps"] > best["rps"]:
                            grpc_results[(name, c)] = stats
                        print(f"grpc {name:8s} c={c:<3d} {stats['rps']:9.0f} req/s  "
                              f"p50 {stats['p50_us'] / 1000:6.2f} ms  "
                              f"p99 {stats['p99_us'] / 1000:7.2f} ms  errors {stats['errors']}",
                              flush=True)  # fmt: skip
        big: dict[tuple[str, int], dict] = {}
        big_runs = [("ours", "binary"), ("ours", "json"), ("mlserver", "json")]
        for _ in range(args.rounds):
            for c in (1, 16):
                for name, kind in big_runs:
                    stats = wrk_body(urls[name] + "/v2/models/iris/infer", bodies[kind], c,
                                     args.duration)  # fmt: skip
                    key = (f"{name}-{kind}", c)
                    if key not in big or stats["rps"] > big[key]["rps"]:
                        big[key] = stats
                    print(f"1000 rows {name:8s} {kind:6s} c={c:<3d} {stats['rps']:8.0f} req/s  "
                          f"p50 {stats['p50_us'] / 1000:6.2f} ms  p99 {stats['p99_us'] / 1000:7.2f}"
                          f" ms  errors {stats['errors'] + stats['non2xx']}", flush=True)  # fmt: skip
        floor_rps, floor_us = floor(model)
    finally:
        for proc in procs.values():
            stop(proc)

    head = (f"Serving benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
            f"{args.duration}s per run, best of {args.rounds}; servers measured alternately)")
    lines = [head, ""]
    if results:
        lines += rest_table(results, levels)
        router_p50 = min(r["p50_us"] for r in router_runs) / 1000
        direct_p50 = min(r["p50_us"] for r in direct_runs) / 1000
        lines.append(
            f"Router overhead at 1 connection: p50 {router_p50:.2f} ms through the router vs "
            f"{direct_p50:.2f} ms direct = **+{router_p50 - direct_p50:.2f} ms**."
        )
        lines.append("")
    if grpc_results:
        lines += grpc_table(grpc_results, grpc_levels)
    else:
        lines += ["gRPC: not measured (no ghz on PATH and no Go toolchain to build it).", ""]
    lines += big_table(big)
    lines.append(f"Floor: raw `model.predict` on one row in-process: {floor_us:.1f} µs per call "
                 f"({floor_rps:.0f} calls/s).")  # fmt: skip
    table = "\n".join(lines)
    print("\n" + table)
    Path(args.out).write_text(table + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
