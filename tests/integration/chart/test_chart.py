"""The Helm chart renders, lints, carries the generated CRDs, and the real apiserver accepts it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops_localstack.cluster import Cluster
from mlops_operator import crdgen

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlops-operator"
KUBE = ("--kube-version", "1.34.4")  # helm template assumes v1.20 without a cluster


def _helm() -> str:
    helm = shutil.which("helm") or str(Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin/helm")
    assert Path(helm).exists(), "helm not found: `make helm` (built from the Go module proxy)"
    return helm


def _template(*args: str) -> list[dict]:
    out = subprocess.run(
        [_helm(), "template", "mlops", str(CHART), "--namespace", "mlops-system", *KUBE, *args],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_helm_lint() -> None:
    out = subprocess.run([_helm(), "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_chart_crds_are_the_generated_ones_and_kept_on_uninstall() -> None:
    docs = _template()
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    generated = {c["metadata"]["name"]: c for c in crdgen.generate_crds()}
    assert set(crds) == set(generated)
    for name, crd in crds.items():
        assert crd["spec"] == generated[name]["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_can_be_left_out() -> None:
    kinds = {d["kind"] for d in _template("--set", "crds.install=false")}
    assert "CustomResourceDefinition" not in kinds
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} <= kinds


def test_operator_deployment_is_hardened_and_configured() -> None:
    docs = _template("--set", "watchNamespaces={team-a,team-b}", "--set", "mlflow.enabled=true")
    dep = next(d for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "mlops-mlops-operator")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLOPS_NAMESPACES"] == "team-a,team-b"
    assert env["MLOPS_MLFLOW_TRACKING_URI"] == "http://mlops-mlops-operator-mlflow:5000"
    assert "--all-namespaces" not in container["args"]


def test_replicas_without_peering_fail_clearly() -> None:
    out = subprocess.run(
        [_helm(), "template", "mlops", str(CHART), *KUBE, "--set", "replicaCount=2"],
        capture_output=True, text=True,
    )
    assert out.returncode != 0 and "needs .Values.peering" in out.stderr


@pytest.mark.integration
def test_rendered_chart_is_accepted_by_the_apiserver(cluster: Cluster, namespace: str) -> None:
    out = subprocess.run(
        [_helm(), "template", "mlops", str(CHART), "--namespace", namespace, *KUBE,
         "--set", "mlflow.enabled=true"],
        capture_output=True, text=True, check=True,
    )
    res = cluster.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-",
                          input=out.stdout, check=False)
    assert res.returncode == 0, res.stderr
    assert "deployment.apps/mlops-mlops-operator serverside-applied (server dry run)" in res.stdout
