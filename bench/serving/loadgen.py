"""Load generators (wrk for REST, ghz for gRPC), the request bodies, and the one-request checks
each server must pass before it is measured."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from servers import REPO

HERE = Path(__file__).resolve().parent
LUA = HERE / "infer.lua"
BODY_LUA = HERE / "body.lua"
GHZ_DIR = REPO / "bench" / ".venv-ghz"
GHZ_VERSION = "v0.120.0"
PROTO = REPO / "serving-runtime" / "mlops_runtime" / "oip" / "open_inference.proto"
ROW = [5.1, 3.5, 1.4, 0.2]
#: The one-row request, as infer.lua sends it.
BODY = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
GRPC_REQUEST = {"model_name": "iris", "inputs": [
    {"name": "predict", "datatype": "FP32", "shape": [1, 4],
     "contents": {"fp32_contents": ROW}}]}  # fmt: skip

Stats = dict[str, Any]


# -- REST --------------------------------------------------------------------------------------


def _wrk(url: str, connections: int, duration: float, script: Path,
         env: dict[str, str] | None = None) -> Stats:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script),
         url],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    ).stdout  # fmt: skip
    stats = json.loads(re.search(r"^JSON (.*)$", out, re.M).group(1))
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def wrk(url: str, connections: int, duration: float) -> Stats:
    """The one-row JSON request (infer.lua)."""
    return _wrk(url, connections, duration, LUA)


def wrk_body(url: str, body: tuple[Path, int | None], connections: int, duration: float) -> Stats:
    """A body file, as JSON or (with a header length) the binary tensor data extension."""
    return _wrk(url, connections, duration, BODY_LUA, {
        "BENCH_BODY": str(body[0]),
        "BENCH_HEADER_LENGTH": "" if body[1] is None else str(body[1])})  # fmt: skip


def rows_1000() -> Any:
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


def infer_bytes(url: str) -> bytes:
    """The raw response to the one-row JSON request."""
    req = urllib.request.Request(url, data=json.dumps(BODY).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def check_infer(url: str) -> dict:
    out = json.loads(infer_bytes(url))
    assert out["outputs"][0]["data"] == [0], (url, out)
    return out


def check_binary(url: str, body: tuple[Path, int | None]) -> None:
    """The binary request gets a binary response with 1,000 predictions."""
    req = urllib.request.Request(url, data=body[0].read_bytes(),
                                 headers={"Inference-Header-Content-Length": str(body[1])})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        length = int(r.headers["Inference-Header-Content-Length"])
        payload = r.read()
    head = json.loads(payload[:length])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8000, head
    assert len(payload) == length + 8000


# -- gRPC --------------------------------------------------------------------------------------


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


def ghz(exe: Path, proto: Path, address: str, concurrency: int, duration: float) -> Stats:
    """ModelInfer over one HTTP/2 connection carrying ``concurrency`` streams."""
    out = subprocess.run(
        [str(exe), "--insecure", "--proto", str(proto),
         "--call", "inference.GRPCInferenceService.ModelInfer", "-d", json.dumps(GRPC_REQUEST),
         "-c", str(concurrency), "--connections", "1", "-z", f"{duration:g}s",
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


def check_grpc(address: str) -> None:
    import grpc

    from mlops_runtime.oip import Stub
    from mlops_runtime.oip import open_inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris")
    t = request.inputs.add(name="predict", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend(ROW)
    with grpc.insecure_channel(address) as channel:
        response = Stub(channel).ModelInfer(request, timeout=10)
    assert response.outputs[0].name == "predict", response


# -- in-process floor --------------------------------------------------------------------------


def predict_floor(model: Any) -> tuple[float, float]:
    """Raw ``model.predict`` on one row in this process: (calls/s, µs per call)."""
    import numpy as np

    row = np.asarray([ROW], dtype=np.float32)
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
