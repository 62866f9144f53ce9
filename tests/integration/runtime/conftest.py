"""A registered iris model (two versions, alias ``champion`` → 2) in the real MLflow server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Registered:
    """What the tests need to know about the registered model."""

    tracking_uri: str
    name: str
    run_ids: tuple[str, str]


@pytest.fixture(scope="module")
def registered_iris(mlflow_server) -> Registered:  # noqa: ANN001
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_runtime.drift import BASELINE_ARTIFACT, compute_baseline

    data = load_iris()
    X, y, names = data.data, data.target, list(data.feature_names)
    name = f"iris-rt-{uuid.uuid4().hex[:6]}"
    uri = mlflow_server.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # process-wide: another suite may have pointed it elsewhere
    mlflow.set_experiment(f"runtime-{name}")
    run_ids = []
    for c in (0.1, 1.0):
        with mlflow.start_run() as run:
            model = LogisticRegression(C=c, max_iter=500).fit(X, y)
            mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name,
                signature=infer_signature(X, model.predict(X)),
            )  # fmt: skip
            mlflow.log_dict(compute_baseline(X, names), BASELINE_ARTIFACT)
            run_ids.append(run.info.run_id)
    MlflowClient(uri, registry_uri=uri).set_registered_model_alias(name, "champion", "2")
    return Registered(mlflow_server.tracking_uri, name, (run_ids[0], run_ids[1]))
