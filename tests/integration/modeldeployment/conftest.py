"""Fixtures of the ModelDeployment suites: the resource helper and a registered model."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mdhelpers import MD, register_versions


@pytest.fixture
def md(kubectl: Any, namespace: str, operator: Any) -> MD:
    return MD(kubectl, namespace, operator)


@pytest.fixture
def model(mlflow_server: Any) -> tuple[str, str, str]:
    """A registered model with two good versions; champion → v1."""
    from mlflow import MlflowClient

    name = f"md-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_versions(mlflow_server.tracking_uri, name, ["good", "good"])
    MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(name, "champion", v1)
    return name, v1, v2
