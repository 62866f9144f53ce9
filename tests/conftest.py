"""Shared fixtures: which cluster, CRDs, a namespace per test, the node stand-in, MLflow.

``--cluster`` picks the cluster: ``local`` (etcd + kube-apiserver + kube-controller-manager
started here), ``kind`` (pytest-kind; needs a Docker engine), or ``kubeconfig`` (an existing
cluster, ``--kubeconfig PATH``).
``auto`` (default) takes ``kubeconfig`` when ``--kubeconfig`` is given, else local — kind only
when asked for (``--cluster=kind``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_localstack.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "crds"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlops", "mlops-operator clusters")
    group.addoption(
        "--cluster",
        choices=["auto", "local", "kind", "kubeconfig"],
        default="auto",
        help="which cluster the integration tests use (default: auto)",
    )
    # pytest-kind registers --kubeconfig too; with it installed we share that option
    with contextlib.suppress(ValueError):
        group.addoption("--kubeconfig", default=None, help="use this existing cluster")


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The cluster for this test session (see the module docstring)."""
    choice = request.config.getoption("--cluster")
    kubeconfig = request.config.getoption("--kubeconfig")
    if choice == "auto":
        # never kind by surprise: a machine that happens to have Docker still gets the local stack
        choice = "kubeconfig" if kubeconfig else "local"
    if choice == "kubeconfig":
        if not kubeconfig:
            raise pytest.UsageError("--cluster=kubeconfig needs --kubeconfig PATH")
        yield Cluster(Path(kubeconfig), kind="kubeconfig")
        return
    if choice == "kind":
        if not _docker_works():
            raise pytest.UsageError("--cluster=kind needs a Docker engine that answers")
        from pytest_kind import KindCluster  # type: ignore[import-untyped]

        kind = KindCluster(f"mlops-{uuid.uuid4().hex[:6]}")
        kind.create()
        try:
            yield Cluster(Path(kind.kubeconfig_path), kind="kind")
        finally:
            kind.delete()
        return
    from mlops_localstack.binaries import ensure_binaries
    from mlops_localstack.controlplane import ControlPlane

    binaries = ensure_binaries()
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"), binaries=binaries).start()
    try:
        kubectl = str(binaries.kubectl) if binaries.kubectl else (shutil.which("kubectl") or "")
        yield Cluster(cp.kubeconfig, kubectl_path=kubectl, kind="local")
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> list[str]:
    """The project's CRDs, installed once per session and Established."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRDs in {CRD_DIR}; run `make crds`"
    return cluster.apply_crds(files)


@pytest.fixture
def kubectl(cluster: Cluster):  # noqa: ANN201
    """``kubectl(*args, input=None, check=True)`` bound to the session's cluster."""
    return cluster.kubectl


@pytest.fixture
def namespace_prefix() -> str:
    """Prefix of the test namespaces; a test package overrides it to give its operator a glob."""
    return ""


@pytest.fixture
def namespace(
    cluster: Cluster, request: pytest.FixtureRequest, namespace_prefix: str
) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{namespace_prefix}{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def k8s_client(cluster: Cluster):  # noqa: ANN201
    """A ``kubernetes.client.ApiClient`` for the session's cluster."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The node stand-in, running pods as local processes (only on the local stack)."""
    if cluster.kind != "local":
        yield None  # a real cluster has real kubelets
        return
    from mlops_localstack.node import NodeStandIn

    # each pytest-xdist worker has a cluster and a node of its own: give their pods disjoint
    # loopback ranges (127.10/16 for gw0, 127.11/16 for gw1, ...) so no two pods share an address
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    ip_range = f"127.{10 + int(worker.removeprefix('gw') or 0) % 100}.0.0/16"
    stand_in = NodeStandIn(cluster.kubeconfig, workdir=tmp_path_factory.mktemp("node"),
                           ip_range=ip_range)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real MLflow tracking server (sqlite + local artifacts) for the session. Its start-up
    allowance is long: MLflow's server imports take minutes on a loaded 2-core machine."""
    from mlops_localstack.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), startup_timeout=600).start()
    try:
        yield server
    finally:
        server.stop()


class OperatorProcess:
    """``mlops-operator run -A`` as a real subprocess, so tests can kill and restart it."""

    def __init__(  # noqa: ANN001
        self, cluster: Cluster, tracking_uri: str, workdir: Path, extra_env=None,
        namespaces: list[str] | None = None,
    ):
        from mlops_localstack.procs import free_port

        self.cluster = cluster
        # operators in tests watch only their tests' namespaces (globs allowed), so that two
        # operators never reconcile the same object
        self.namespaces = list(namespaces or [])
        self.tracking_uri = tracking_uri
        self.workdir = workdir
        self.extra_env = dict(extra_env or {})
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self, **env: str) -> OperatorProcess:
        from mlops_localstack.stack import start_operator

        self.starts += 1
        full_env = self.cluster.env
        full_env.pop("MLOPS_NAMESPACES", None)
        full_env.update({
            "MLOPS_MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLOPS_METRICS_PORT": str(self.metrics_port),
            "MLOPS_METRICS_HOST": "127.0.0.1",
            "MLOPS_RESYNC_SECONDS": "3",
            **self.extra_env,
            **env,  # may override any of the above
        })
        self.proc = start_operator(
            full_env, self.log_path, self.namespaces, verbose=True,
            liveness_port=self.liveness_port, timeout=90,
        )
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill and self.proc.proc is not None:
            self.proc.proc.kill()
            self.proc.proc.wait()
        self.proc.stop()
        self.proc = None

    def restart(self, **env: str) -> OperatorProcess:
        self.stop(kill=True)
        return self.start(**env)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.running()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("operator-*.log"))
        )

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


@pytest.fixture
def operator(cluster: Cluster, crds, mlflow_server, namespace: str, tmp_path: Path):  # noqa: ANN001, ANN201
    """The operator as a subprocess for one test, watching only the test's namespace.

    ``operator.restart(**env)`` kills it hard and starts it again; extra env (for fault
    injection) can be passed to ``start``/``restart``.
    """
    op = OperatorProcess(cluster, mlflow_server.tracking_uri, tmp_path, namespaces=[namespace])
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real Prometheus discovering the session cluster's pods (``prometheus.io/*`` annotations)."""
    from mlops_localstack.prometheus import PrometheusServer

    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), kubeconfig=cluster.kubeconfig)
    server.start()
    try:
        yield server
    finally:
        server.stop()
