"""The servers of the serving benchmark: the model, how each server is started, and what each
one has switched on (printed with the results, so a table never hides a setting)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MLSERVER_VENV = REPO / "bench" / ".venv-mlserver"
MLSERVER_PINS = ("mlserver==1.7.*", "mlserver-sklearn==1.7.*")
#: MLServer's adaptive batching in the "batching" column: up to 64 requests, waiting at most 1 ms.
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.001}


@dataclass
class Server:
    key: str  # ours | mlserver | mlserver-batch | floor | router
    label: str
    proc: subprocess.Popen
    url: str
    ready_path: str = "/v2/health/ready"
    grpc: str | None = None  # host:port of its gRPC server

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/iris/infer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed(python: Path, module: str) -> str | None:
    """The version of ``module``'s distribution in the interpreter ``python`` (None if absent)."""
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys\n"
                          "try: print(m.version(sys.argv[1]))\n"
                          "except m.PackageNotFoundError: pass", module],
                         capture_output=True, text=True, check=False)  # fmt: skip
    return out.stdout.strip() or None


def ensure_mlserver() -> Path:
    """MLServer 1.7 + mlserver-sklearn in ``bench/.venv-mlserver`` (its pins conflict with the
    project's), plus httptools at our version: uvicorn picks it when installed, so both servers
    parse HTTP with the same library (plain ``pip install mlserver`` leaves uvicorn on h11)."""
    exe = MLSERVER_VENV / "bin" / "mlserver"
    pip = str(MLSERVER_VENV / "bin" / "pip")
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run([pip, "install", "-q", *MLSERVER_PINS], check=True)
    ours = _installed(Path(sys.executable), "httptools")
    python = MLSERVER_VENV / "bin" / "python"
    if ours and _installed(python, "httptools") != ours:
        subprocess.run([pip, "install", "-q", f"httptools=={ours}"], check=True)
    return exe


def build_models(workdir: Path) -> tuple[Any, Path, Path]:
    """One iris LogisticRegression: as an MLflow model (ours) and a joblib file (MLServer)."""
    import joblib
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    mlflow_dir = workdir / "mlflow-iris"
    mlflow.sklearn.save_model(model, str(mlflow_dir),
                              signature=infer_signature(X, model.predict(X)))  # fmt: skip
    joblib_path = workdir / "model.joblib"
    joblib.dump(model, joblib_path)
    return model, mlflow_dir, joblib_path


def mlserver_dir(workdir: Path, joblib_path: Path, name: str, batching: bool,
                 http: int, grpc: int) -> Path:
    """A model repository for one MLServer process: ``parallel_workers: 0`` (inference in its
    one process, like ours), adaptive batching off or :data:`MLSERVER_BATCH`."""
    root = workdir / name
    (root / "iris").mkdir(parents=True)
    (root / "settings.json").write_text(json.dumps({
        "http_port": http, "grpc_port": grpc, "metrics_port": free_port(),
        "host": "127.0.0.1", "parallel_workers": 0, "debug": False}))  # fmt: skip
    settings: dict[str, Any] = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
                                "parameters": {"uri": str(joblib_path), "version": "v1"}}
    if batching:
        settings.update(MLSERVER_BATCH)
    (root / "iris" / "model-settings.json").write_text(json.dumps(settings))
    return root


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
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


def wait_ready(server: Server, timeout: float = 180) -> None:
    wait_url(server.url + server.ready_path, server.proc, timeout)


def wait_url(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``url`` answers 200; fails when ``proc`` exits first."""
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


def ours_env(mlflow_dir: Path, port: int, grpc: int) -> dict[str, str]:
    """mlops-runtime as a ModelDeployment runs it: every tuning setting at its default."""
    return {"MLOPS_RUNTIME_MODEL_URI": str(mlflow_dir), "MLOPS_RUNTIME_MODEL_NAME": "iris",
            "MLOPS_RUNTIME_HOST": "127.0.0.1", "MLOPS_RUNTIME_PORT": str(port),
            "MLOPS_RUNTIME_GRPC_PORT": str(grpc), "MLOPS_RUNTIME_LOG_LEVEL": "warning"}  # fmt: skip


def start_servers(workdir: Path, mlflow_dir: Path, joblib_path: Path,
                  mlserver: Path) -> dict[str, Server]:
    """Ours, MLServer without and with adaptive batching, and the router in front of ours
    (the floor starts later: it answers with ours's own response bytes)."""
    bindir = Path(sys.executable).parent
    servers: dict[str, Server] = {}
    port, grpc = free_port(), free_port()
    servers["ours"] = Server("ours", "mlops-runtime", start(
        [str(bindir / "mlops-runtime"), "serve"], ours_env(mlflow_dir, port, grpc),
        workdir / "ours.log"), f"http://127.0.0.1:{port}", grpc=f"127.0.0.1:{grpc}")  # fmt: skip
    for key, label, batching in (("mlserver", "MLServer", False),
                                 ("mlserver-batch", "MLServer+batching", True)):  # fmt: skip
        port, grpc = free_port(), free_port()
        root = mlserver_dir(workdir, joblib_path, key, batching, port, grpc)
        servers[key] = Server(key, label, start([str(mlserver), "start", str(root)], {},
                                                workdir / f"{key}.log"),
                              f"http://127.0.0.1:{port}", grpc=f"127.0.0.1:{grpc}")  # fmt: skip
    router_port = free_port()
    config = workdir / "router.json"
    config.write_text(json.dumps({"variants": [
        {"name": "only", "weight": 1, "endpoints": [servers["ours"].url]}]}))  # fmt: skip
    servers["router"] = Server("router", "router", start(
        [str(bindir / "mlops-runtime"), "router"],
        {"MLOPS_ROUTER_CONFIG": str(config), "MLOPS_ROUTER_HOST": "127.0.0.1",
         "MLOPS_ROUTER_PORT": str(router_port), "MLOPS_ROUTER_LOG_LEVEL": "warning"},
        workdir / "router.log"), f"http://127.0.0.1:{router_port}", ready_path="/router/ready")
    return servers


def start_floor(workdir: Path, response: bytes, asgi: bool = True) -> Server:
    """The transport floor (``floor``), or with ``asgi=False`` the floor without an ASGI cycle
    (``floor-raw``)."""
    path = workdir / "floor-response.json"
    path.write_bytes(response)
    port = free_port()
    key = "floor" if asgi else "floor-raw"
    proc = start([sys.executable, str(HERE / "floor_app.py"), "--port", str(port),
                  "--response", str(path), *([] if asgi else ["--no-asgi"])], {},
                 workdir / f"{key}.log")  # fmt: skip
    return Server(key, "transport floor" + ("" if asgi else " without ASGI"), proc,
                  f"http://127.0.0.1:{port}")


def optimisations(mlflow_dir: Path) -> list[str]:
    """What each side has switched on, read from the settings the servers actually get."""
    from mlops_runtime.settings import RuntimeSettings

    s = RuntimeSettings(**{k.removeprefix("MLOPS_RUNTIME_").lower(): v  # type: ignore[arg-type]
                           for k, v in ours_env(mlflow_dir, 1, 2).items()})  # fmt: skip
    ms_python = MLSERVER_VENV / "bin" / "python"
    parser = "httptools " + (_installed(ms_python, "httptools") or "not installed: h11")
    uvloop = _installed(ms_python, "uvloop") or "not installed"
    identity = {"model_uri", "model_name", "variant", "host", "port", "grpc_port", "log_level"}
    tuning = ", ".join(f"{name} {getattr(s, name)}" for name in type(s).model_fields
                       if name not in identity)  # fmt: skip
    return [
        f"* mlops-runtime {_installed(Path(sys.executable), 'mlops-operator') or ''}: "
        "uvicorn + uvloop + httptools, one process, micro-batching (waits only under load); "
        f"gRPC on grpcio's asyncio server; settings (all defaults): {tuning}.",
        f"* MLServer {_installed(ms_python, 'mlserver')} (mlserver-sklearn), one process "
        f"(`parallel_workers: 0`): uvicorn + uvloop {uvloop} + {parser}; adaptive batching "
        "**off** in the MLServer column, **on** (`max_batch_size` "
        f"{MLSERVER_BATCH['max_batch_size']}, `max_batch_time` {MLSERVER_BATCH['max_batch_time']}"
        " s) in the MLServer+batching column; gRPC on grpcio's asyncio server.",
        "* transport floor: uvicorn + uvloop + httptools, one process, a fixed response "
        "(mlops-runtime's own bytes for this request) after reading the body; no model, no codec.",
        "* transport floor without ASGI: the same, answered from uvicorn's httptools protocol "
        "(no ASGI scope, cycle, task or messages), as mlops-runtime answers infer requests "
        "since `infer_protocol.py`: the stricter floor for ours.",
    ]
