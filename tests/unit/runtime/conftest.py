"""Fixtures for the serving-runtime unit tests: a small iris model saved as an MLflow model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlops_localstack.cluster import poll
from mlops_runtime.drift import compute_baseline
from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Iris features, labels and feature names."""
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target, list(data.feature_names)


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory, iris) -> Path:  # noqa: ANN001
    """A LogisticRegression on iris saved with MLflow's sklearn flavor and a signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y, _ = iris
    model = LogisticRegression(max_iter=500).fit(X, y)
    path = tmp_path_factory.mktemp("models") / "iris"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)))
    return path


@pytest.fixture(scope="session")
def iris_baseline(iris) -> dict:  # noqa: ANN001
    """Baseline histograms of the iris training data."""
    X, _, names = iris
    return compute_baseline(X, names)


@pytest.fixture
def make_client(iris_model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Build a started TestClient for the app with the given settings overrides."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = RuntimeSettings(
            model_uri=str(iris_model_dir), model_name="iris", variant="blue", load_retries=1,
            **overrides,
        )  # fmt: skip
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _wait_ready(client: TestClient, timeout: float = 30) -> None:
    """Poll readiness (the model loads in the background) without a fixed sleep."""
    poll("the model server to be ready",
         lambda: client.get("/v2/health/ready").status_code == 200, timeout=timeout, interval=0.05)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A ready client serving the iris model as ``iris``."""
    c = make_client()
    _wait_ready(c)
    return c


@pytest.fixture
def wait_ready() -> Callable[[TestClient], None]:
    """Poll a client's readiness endpoint until 200."""
    return _wait_ready


@pytest.fixture
def infer_body() -> Callable[..., str]:
    """Build an OIP inference body from rows."""
    return _infer_body


def _infer_body(rows: list[list[float]], datatype: str = "FP64", **extra: object) -> str:
    """An OIP inference body with one [N, 4] tensor."""
    flat = [x for row in rows for x in row]
    body = {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])],
                        "datatype": datatype, "data": flat}], **extra}  # fmt: skip
    return json.dumps(body)


class Scrape:
    """A Prometheus exposition parsed by ``prometheus_client.parser``."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def series(self, name: str) -> list[Any]:
        """Every sample named ``name`` (``name`` as exposed, e.g. ``..._total``)."""
        return [s for s in self.samples if s.name == name]

    def value(self, name: str, labels: dict[str, str]) -> float | None:
        """The value of the sample with exactly these labels, ``None`` if there is none."""
        found = [s.value for s in self.series(name) if s.labels == labels]
        assert len(found) <= 1, f"{name}{labels} exposed {len(found)} times"
        return found[0] if found else None


@pytest.fixture
def scrape() -> Callable[[str], Scrape]:
    """Parse a ``/metrics`` body."""
    return Scrape


# -- a whole model server (REST + gRPC) on loopback, in a thread ---------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago (gRPC refuses to share it: so_reuseport=0)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """:class:`mlops_runtime.server.ModelServer` (REST and gRPC, one data plane) serving in a
    background thread's event loop, so that blocking clients (tritonclient) can call it."""

    def __init__(self, plane_factory: Callable[[RuntimeSettings], Any], **overrides: Any) -> None:
        from mlops_runtime.server import ModelServer

        defaults = {"host": "127.0.0.1", "port": 0, "grpc_port": free_port(),
                    "graceful_shutdown_s": 1.0, "load_retries": 1}  # fmt: skip
        settings = RuntimeSettings(**{**defaults, **overrides})
        self.settings = settings
        self.plane = plane_factory(settings)
        self.server = ModelServer(settings, self.plane)
        self.error: BaseException | None = None
        import threading

        self.thread = threading.Thread(target=self._run, name="model-server", daemon=True)

    def _run(self) -> None:
        import asyncio

        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self.error = exc

    def start(self) -> ThreadedServer:
        self.thread.start()

        def up() -> bool:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"model server failed to start: {self.error!r}")
            return bool(self.server.http.started)

        poll("the threaded model server to start", up, timeout=30, interval=0.02)
        return self

    @property
    def http(self) -> str:
        """``host:port`` of REST."""
        return f"127.0.0.1:{self.server.http_port}"

    @property
    def grpc(self) -> str:
        """``host:port`` of gRPC."""
        return f"127.0.0.1:{self.settings.grpc_port}"

    def stop(self) -> None:
        self.server.exit()
        self.thread.join(30)
        assert not self.thread.is_alive(), "model server did not stop"


def echo_model(numeric: bool = True, name: str = "echo") -> Any:
    """An in-memory model returning its input rows unchanged (every datatype round-trips):
    numeric, or taking strings (BYTES) when ``numeric`` is false."""
    from mlops_runtime.codec import FeatureSpec
    from mlops_runtime.model import LoadedModel

    spec = FeatureSpec(None, None, numeric, np.dtype(np.float64))
    datatype = "FP64" if numeric else "BYTES"
    meta = [{"name": "input-0", "datatype": datatype, "shape": [-1, -1]}]
    return LoadedModel(name=name, version="1", platform="echo", spec=spec,
                       methods={"predict": lambda rows: rows}, inputs=meta,
                       outputs=[{**meta[0], "name": "predict"}], source_uri="memory:echo")  # fmt: skip


@pytest.fixture(scope="session")
def iris_loaded(iris_model_dir: Path) -> Any:
    """The iris model loaded once (shared by every data plane that serves it)."""
    from mlops_runtime.model import load_model

    return load_model(str(iris_model_dir), "iris")


def _plane_with(model: Any) -> Callable[[RuntimeSettings], Any]:
    from mlops_runtime.dataplane import DataPlane

    def make(settings: RuntimeSettings) -> Any:
        plane = DataPlane(settings)
        if model is not None:
            plane.install(model)
        return plane

    return make


@pytest.fixture
def start_server() -> Iterator[Callable[..., ThreadedServer]]:
    """Start a threaded model server for a model (``None``: no model, never ready)."""
    servers: list[ThreadedServer] = []

    def start(model: Any, **overrides: Any) -> ThreadedServer:
        server = ThreadedServer(_plane_with(model), **overrides).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def module_servers(iris_loaded: Any) -> Iterator[dict[str, ThreadedServer]]:
    """Servers shared by a module's tests: ``iris``, numeric ``echo``, ``text`` (BYTES echo), and
    ``empty`` (no model configured: never ready, name ``iris``)."""
    servers = {
        "iris": ThreadedServer(_plane_with(iris_loaded), model_name="iris").start(),
        "echo": ThreadedServer(_plane_with(echo_model())).start(),
        "text": ThreadedServer(_plane_with(echo_model(numeric=False, name="text"))).start(),
        "empty": ThreadedServer(_plane_with(None), model_name="iris").start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def make_echo() -> Callable[..., Any]:
    """:func:`echo_model` as a fixture."""
    return echo_model


@pytest.fixture
def held_echo() -> tuple[Any, Any]:
    """``(model, release)``: an echo model whose ``predict`` waits until ``release`` (a
    ``threading.Event``) is set; serve it with ``inline_predict_max_rows=0`` so that it waits in
    the predict thread, not on the event loop."""
    import threading

    model = echo_model()
    release = threading.Event()

    def held(rows: np.ndarray) -> np.ndarray:
        release.wait(10)
        return rows

    model.methods["predict"] = held
    return model, release


def _refuses(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def refuses() -> Callable[[int], bool]:
    """``refuses(port)``: whether the loopback ``port`` refuses connections (listener closed)."""
    return _refuses


# -- any ASGI app (the router) under uvicorn on loopback, in a thread --------------------------


class Threaded:
    """An ASGI app under uvicorn in a background thread, on an ephemeral loopback port."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        import asyncio
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan=lifespan))  # fmt: skip
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        poll("server to start", lambda: self.server.started, timeout=30, interval=0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def threaded_server() -> type[Threaded]:
    """:class:`Threaded` itself, for module-scoped fixtures (which stop what they start)."""
    return Threaded


@pytest.fixture
def serve_asgi() -> Iterator[Callable[..., Threaded]]:
    """Serve an ASGI app under uvicorn in a thread (stopped at teardown)."""
    started: list[Threaded] = []

    def start(app: Any, lifespan: str = "off") -> Threaded:
        started.append(Threaded(app, lifespan))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """Start a router (under uvicorn, in a thread) in front of an upstream port; returns the
    router's port."""
    from mlops_runtime.router.app import Router
    from mlops_runtime.router.settings import RouterSettings

    started: list[Threaded] = []

    def start(upstream_port: int) -> int:
        config = tmp_path / "router.json"
        config.write_text(json.dumps({"variants": [
            {"name": "only", "weight": 1, "endpoints": [f"http://127.0.0.1:{upstream_port}"]}]}))  # fmt: skip
        server = Threaded(Router(RouterSettings(config=str(config), reload_interval_s=3600,
                                                discovery_interval_s=3600)), lifespan="on")  # fmt: skip
        started.append(server)
        return server.port

    yield start
    for server in started:
        server.stop()
