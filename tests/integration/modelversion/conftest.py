"""Fixtures of the ModelVersion integration tests: one shared operator, MLflow helpers.

The tests never use the TrainingRun controller: they create MLflow runs (metrics, optionally
a tiny sklearn model) and registry versions themselves, then apply ModelVersion resources and
assert both the resource's status and the registry (aliases, tags).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mvhelpers import MV, Registry, operator_process_class


@pytest.fixture(scope="package")
def mv_operator(
    request: pytest.FixtureRequest,
    cluster: Any,
    crds: Any,
    mlflow_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """One operator shared by the ModelVersion tests (each test uses its own model names).

    It watches only the ``mv-*`` namespaces of these tests (see ``namespace_prefix``): without a
    ``__init__.py`` this "package" fixture lives for the whole session, and it must not
    reconcile other suites' objects.
    """
    cls = operator_process_class(request.config)
    op = cls(cluster, mlflow_server.tracking_uri, tmp_path_factory.mktemp("mv-operator"),
             namespaces=["mv-*"]).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace_prefix() -> str:
    """ModelVersion test namespaces are ``mv-*``: the shared operator watches exactly those."""
    return "mv-"


@pytest.fixture(scope="package")
def registry(mlflow_server: Any) -> Registry:
    return Registry(mlflow_server.tracking_uri)


@pytest.fixture
def model_name(namespace: str) -> str:
    """A registered-model name unique to the test."""
    return f"m-{namespace[-12:]}-{uuid.uuid4().hex[:4]}"


@pytest.fixture
def mv(kubectl: Callable[..., Any], namespace: str, mv_operator: Any) -> MV:
    """ModelVersions in the test's namespace, reconciled by the shared operator."""
    return MV(kubectl, namespace, mv_operator)

