"""Fixtures of the controller tests: the session's ``mlflow_server`` with a longer start-up
allowance (MLflow's server imports take minutes on a loaded 2-core machine; the shared fixture
in tests/conftest.py allows 120 s)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlops_localstack.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), startup_timeout=300).start()
    try:
        yield server
    finally:
        server.stop()
