"""Fixtures for the TrainingRun integration tests (helpers live in ``trhelpers``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from trhelpers import Kube


@pytest.fixture
def kube(kubectl: Callable[..., Any], namespace: str) -> Kube:
    """kubectl and JSON reads bound to the test's namespace."""
    return Kube(kubectl, namespace)


@pytest.fixture
def mlflow_client(mlflow_server: Any) -> Any:
    """An MlflowClient of the session's tracking server (and registry)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(
        tracking_uri=mlflow_server.tracking_uri, registry_uri=mlflow_server.tracking_uri
    )
