"""MLflow stopped during validation: TemporaryError, a condition, nothing promoted; restarted:
the normal outcome. Uses its own MLflow server (same port and store across the restart) and its
own operator restricted to the test's namespace; the shared operator is paused meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mvhelpers import MV, Registry, operator_process_class

pytestmark = pytest.mark.integration


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[Any]:
    from mlops_localstack.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        yield server
    finally:
        server.stop()


def test_mlflow_stopped_during_validation_then_restarted(
    request: pytest.FixtureRequest, cluster: Any, kubectl: Any, namespace: str,
    own_mlflow: Any, mv_operator: Any, tmp_path: Path,
) -> None:
    registry = Registry(own_mlflow.tracking_uri)
    model = "down-model"
    v1 = registry.version(model, {"accuracy": 0.8})
    registry.set_alias(model, "champion", v1)
    v2 = registry.version(model, {"accuracy": 0.9})
    mv_operator.stop()  # the shared operator (mv-*) talks to the other MLflow
    op = operator_process_class(request.config)(
        cluster, own_mlflow.tracking_uri, tmp_path / "op", namespaces=[namespace]
    )
    (tmp_path / "op").mkdir()
    try:
        op.start()
        mv = MV(kubectl, namespace, op)
        own_mlflow.stop()
        mv.apply("cand", {"model": model, "version": v2, "validation": {
            "metrics": [{"name": "accuracy", "min": 0.5, "compareTo": "champion"}]}})
        cond = mv.wait("MLflowReachable=False", lambda: (
            c if (c := mv.condition("cand", "MLflowReachable")).get("status") == "False"
            else None), 60)
        assert cond["reason"] == "MLflowUnreachable" and "unreachable" in cond["message"]
        st = mv.status("cand")
        assert st.get("phase") == "Pending" and "alias" not in st
        assert mv.condition("cand", "Ready")["status"] == "False"
        assert "MLflow unreachable" in mv.wait(
            "a retry in the logs", lambda: "MLflow unreachable" in op.logs() and op.logs(), 30)
        own_mlflow.start()  # same port, same store
        st = mv.wait_phase("cand", "Promoted", "Rejected", "Failed", timeout=90)
        assert st["phase"] == "Promoted" and st["previousChampion"] == v1
        assert mv.condition("cand", "MLflowReachable")["status"] == "True"
        assert registry.aliases(model) == {"champion": v2}
        assert registry.tags(model, v2)["mlops.dev/previous-champion"] == v1
        assert 'mlops_reconcile_errors_total{error="temporary",kind="ModelVersion"}' in \
            op.metrics()
    finally:
        op.stop()
        mv_operator.start()
