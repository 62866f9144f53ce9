"""Fixtures of the chart tests: ``chart_stack`` (see chart_stack.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from chart_stack import ChartStack, audited_control_plane

from mlops_localstack.cluster import Cluster


@pytest.fixture(scope="session")
def chart_stack(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartStack]:
    """A local control plane (audit log on), node stand-in and MLflow for the chart's tests."""
    if request.config.getoption("--cluster") not in ("auto", "local"):
        pytest.skip("the chart install tests start their own local control plane")
    from mlops_localstack.binaries import ensure_binaries
    from mlops_localstack.mlflow_server import MlflowServer
    from mlops_localstack.node import NodeStandIn

    binaries = ensure_binaries()
    work = tmp_path_factory.mktemp("chart-stack")
    cp = audited_control_plane(work / "controlplane")
    cp.binaries = binaries
    cp.start()
    mlflow = node = None
    try:
        kubectl = str(binaries.kubectl) if binaries.kubectl else (shutil.which("kubectl") or "")
        cluster = Cluster(cp.kubeconfig, kubectl_path=kubectl, kind="local")
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        # the session fixtures use 127.10-109/16; this node takes 127.150+/16
        ip_range = f"127.{150 + int(worker.removeprefix('gw') or 0) % 50}.0.0/16"
        node = NodeStandIn(cp.kubeconfig, workdir=work / "node", ip_range=ip_range)
        node.start()
        # MLflow's server imports take minutes on a loaded 2-core machine (a full parallel run)
        mlflow = MlflowServer(work / "mlflow", startup_timeout=300).start()
        yield ChartStack(cluster, cp.workdir / "audit.log", node, mlflow.tracking_uri, work)
    finally:
        if mlflow is not None:
            mlflow.stop()
        if node is not None:
            node.stop()
        cp.stop()
