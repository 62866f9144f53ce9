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
