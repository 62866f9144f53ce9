"""Fixtures of the spec fuzzing tests: the session's MLflow server, given longer to start.

The fuzz suite starts a control plane, MLflow and an operator; on a loaded machine MLflow's first
start (its database migrations, the FastAPI import) can take longer than the default two minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlops_localstack.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), startup_timeout=600).start()
    try:
        yield server
    finally:
        server.stop()
