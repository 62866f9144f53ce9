"""Chaos suites: a local stack of their own whose components the tests crash and restart.

Each xdist worker running chaos files starts one :class:`~mlops_localstack.stack.LocalStack`
(control plane, node stand-in, MLflow, Prometheus; no operator — each test runs its own as a
process it can ``kill -9``). It is not the session's ``cluster``: restarting the apiserver or
etcd here never disturbs the other suites.

How much chaos (defaults: the fixed-seed run of ``make test``):

``--chaos-rounds N`` / ``MLOPS_CHAOS_ROUNDS``   rounds of the operator-kill test (default 1; 10 for
                                                the long run)
``--chaos-runs N`` / ``MLOPS_CHAOS_RUNS``       TrainingRuns applied per round (20; 50 long)
``--chaos-seed N`` / ``MLOPS_CHAOS_SEED``       base seed; round ``i`` uses ``seed + i`` (20261130)
``--chaos-mlflow-down S`` / ``MLOPS_CHAOS_MLFLOW_DOWN``  seconds MLflow stays down (20; 60 long)

The options are known when the chaos directory is on the command line (``pytest tests/chaos
--chaos-rounds 10``); the environment variables work from anywhere (``make test``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoshelpers import chaos_setting, operator_process_class

from mlops_localstack.cluster import Cluster

# the ModelDeployment suites' helpers (registered versions, traffic), shared rather than copied
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "modeldeployment"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "chaos suites (tests/chaos)")
    group.addoption("--chaos-rounds", type=int, default=None,
                    help="rounds of the operator-kill chaos test (env MLOPS_CHAOS_ROUNDS; 1)")
    group.addoption("--chaos-runs", type=int, default=None,
                    help="TrainingRuns per round (env MLOPS_CHAOS_RUNS; 20)")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="base seed of the chaos tests (env MLOPS_CHAOS_SEED; 20261130)")
    group.addoption("--chaos-mlflow-down", type=float, default=None,
                    help="seconds MLflow stays down (env MLOPS_CHAOS_MLFLOW_DOWN; 20)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: crashes and restarts components of a local stack "
                            "of its own (tests/chaos; longer with --chaos-rounds)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``chaos_seed``: one test per round, seeds derived from the base seed."""
    if "chaos_seed" in metafunc.fixturenames:
        base = chaos_setting(metafunc.config, "seed")
        rounds = chaos_setting(metafunc.config, "rounds")
        seeds = [base + i for i in range(rounds)]
        metafunc.parametrize("chaos_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local stack of this worker's chaos tests (no operator, no Alertmanager)."""
    from mlops_localstack.stack import LocalStack

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    # pod addresses apart from the fixture nodes (127.10+/16) and the dev stack (127.30/16)
    pod_range = f"127.{50 + int(worker.removeprefix('gw') or 0) % 50}.0.0/16"
    # generous start timeouts: the chaos suites load the machine (50 training pods at once)
    stack = LocalStack(tmp_path_factory.mktemp("chaos-stack"), with_operator=False,
                       with_alertmanager=False, pod_range=pod_range, server_startup_timeout=600)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def chaos_cluster(chaos_stack: Any) -> Cluster:
    from mlops_localstack.binaries import ensure_binaries

    binaries = ensure_binaries()
    kubectl = str(binaries.kubectl) if binaries.kubectl else (shutil.which("kubectl") or "")
    return Cluster(chaos_stack.control_plane.kubeconfig, kubectl_path=kubectl, kind="local")


@pytest.fixture
def chaos_namespace(chaos_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the chaos stack (deleted afterwards, without waiting)."""
    import uuid

    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    chaos_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        chaos_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def chaos_operator(chaos_stack: Any, chaos_cluster: Cluster, chaos_namespace: str,
                   tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The operator as a process watching the test's namespace, not started yet.

    ``OperatorProcess`` of the root conftest: ``start(**env)``, ``stop(kill=True)``,
    ``alive()``, ``logs()``.
    """
    cls = operator_process_class(request.config)
    env = {"MLOPS_PROMETHEUS_URL": chaos_stack.prometheus.url} if chaos_stack.prometheus else {}
    op = cls(chaos_cluster, chaos_stack.mlflow.tracking_uri, tmp_path, extra_env=env,
             namespaces=[chaos_namespace])
    try:
        yield op
    finally:
        op.stop()
