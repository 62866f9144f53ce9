"""The local control plane is a real Kubernetes: version, RBAC, controllers, clean teardown."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mlops_localstack.binaries import K8S_VERSION, Binaries, ensure_binaries
from mlops_localstack.cluster import Cluster
from mlops_localstack.controlplane import ControlPlane
from mlops_localstack.procs import ComponentExited

pytestmark = pytest.mark.integration


def test_server_is_the_pinned_release(cluster: Cluster) -> None:
    if cluster.kind != "local":
        pytest.skip("only meaningful for the local stack")
    assert cluster.server_version() == K8S_VERSION


def test_rbac_is_enforced(cluster: Cluster, namespace: str) -> None:
    sa = f"system:serviceaccount:{namespace}:default"
    cluster.wait_for(
        "the default ServiceAccount (service-account controller)",
        lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode
        == 0,
    )
    denied = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, "--as", sa,
                             check=False)
    assert denied.stdout.strip() == "no"
    cluster.kubectl("create", "rolebinding", "view", "--clusterrole=view",
                    f"--serviceaccount={namespace}:default", "-n", namespace)
    allowed = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, "--as", sa,
                              check=False)
    assert allowed.stdout.strip() == "yes"


def test_anonymous_requests_are_forbidden(cluster: Cluster) -> None:
    cfg = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    server = cfg["clusters"][0]["cluster"]["server"]
    resp = httpx.get(f"{server}/api/v1/namespaces", verify=False, timeout=5)
    assert resp.status_code in (401, 403)


def test_controller_manager_runs_controllers(cluster: Cluster, namespace: str) -> None:
    # the root-CA publisher and the ReplicaSet controller are kube-controller-manager's
    cluster.wait_for(
        "kube-root-ca.crt ConfigMap",
        lambda: cluster.kubectl("get", "cm", "kube-root-ca.crt", "-n", namespace,
                                check=False).returncode == 0,
    )
    cluster.kubectl("create", "deployment", "web", "--image=example/web:1", "--replicas=2",
                    "-n", namespace)
    cluster.wait_for(
        "a ReplicaSet with 2 pods created by the controllers",
        lambda: len(cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split())
        == 2,
    )


def _fake_binary(path: Path, script: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_component_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    real = ensure_binaries(allow_build=False)
    broken = Binaries(
        etcd=real.etcd,
        kube_apiserver=_fake_binary(
            tmp_path / "kube-apiserver",
            "import sys; print('E0101 flag --bogus: unknown flag', file=sys.stderr); sys.exit(1)",
        ),
        kube_controller_manager=real.kube_controller_manager,
        kubectl=real.kubectl,
    )
    cp = ControlPlane(tmp_path / "cp", binaries=broken)
    with pytest.raises(ComponentExited) as err:
        cp.start()
    assert "kube-apiserver exited early with code 1" in str(err.value)
    assert "unknown flag" in str(err.value)
    # etcd, started before, was stopped on the way out
    assert cp.processes == []


def test_stop_leaves_no_processes(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path / "cp", controller_manager=False).start()
    pids = [p.pid for p in cp.processes]
    assert len(pids) == 2
    cp.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def test_local_cli_up_status_down(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    cli = [sys.executable, "-m", "mlops_operator.cli", "local"]
    up = subprocess.run([*cli, "up", "--state-dir", str(state), "--no-operator", "--no-mlflow",
                         "--no-node"], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert "export KUBECONFIG=" in up.stdout
        status = subprocess.run([*cli, "status", "--state-dir", str(state)],
                                capture_output=True, text=True, timeout=30)
        info = json.loads(status.stdout)
        assert info["ready"] is True and info["serverVersion"] == K8S_VERSION
        kubectl = Cluster(Path(info["kubeconfig"]), kubectl_path=info["kubectl"])
        crds = kubectl.kubectl("get", "crd", "-o", "name").stdout
        for kind in ("trainingruns", "modelversions", "modeldeployments"):
            assert f"{kind}.mlops.dev" in crds
        again = subprocess.run([*cli, "up", "--state-dir", str(state), "--no-operator"],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = subprocess.run([*cli, "down", "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=120)
    assert "stopped" in down.stdout
    assert not (state / "state.json").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
