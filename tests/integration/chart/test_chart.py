"""The Helm chart renders, lints, carries the generated CRDs, and the real apiserver accepts it."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("values", [
    [],
    ["--set", "watchNamespaces={a,b}", "--set", "peering=mlops", "--set", "replicaCount=2",
     "--set", "networkPolicy.enabled=true", "--set", "dashboard.enabled=true",
     "--set", "prometheusRule.enabled=true", "--set", "mlflow.enabled=true"],
])
def test_helm_lint(values: list[str]) -> None:
    out = subprocess.run([_helm(), "lint", str(CHART), "--strict", *values],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("value", "message"), [
    ("replicaCount=two", "at '/replicaCount': got string, want integer"),
    ("watchNamespaces=team-a", "at '/watchNamespaces': got string, want array"),
    ("mlflow.trackingUri=mlflow:5000", "at '/mlflow/trackingUri': 'mlflow:5000' does not match"),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
    ("replicaCount=9", "at '/replicaCount'"),
    ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
    ("peerin=mlops", "additional properties 'peerin' not allowed"),
])
def test_schema_rejects_a_bad_value_with_its_message(value: str, message: str) -> None:
    out = subprocess.run([_helm(), "template", "mlops", str(CHART), *KUBE, "--set", value],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr


def _rules(doc: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in doc["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_namespaced_mode_has_roles_there_and_only_kopfs_reads_cluster_wide() -> None:
    docs = _template("--set", "watchNamespaces={team-a,team-b}")
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == bindings == {"team-a", "team-b"}
    [cluster_role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert _rules(cluster_role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch")}
    cluster_wide = _template()
    [full] = [d for d in cluster_wide if d["kind"] == "ClusterRole"]
    assert _rules(roles["team-a"]) < _rules(full) | {("kopf.dev", "kopfpeerings", "patch")}
    assert not [d for d in cluster_wide if d["kind"] in ("Role", "RoleBinding")]
    for doc in (roles["team-a"], full):
        granted = _rules(doc)
        assert not {r for r in granted if r[1] in ("secrets", "nodes", "*") or r[2] == "*"}


def test_ha_ships_kopf_peering_crds_the_peering_object_and_a_pdb() -> None:
    docs = _template("--set", "peering=mlops", "--set", "replicaCount=2")
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    [peering] = [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    assert peering["metadata"]["name"] == "mlops"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    dep = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOPS_PEERING"] == "mlops" and dep["spec"]["replicas"] == 2
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in _rules(role)
    ns_docs = _template("--set", "peering=mlops", "--set", "replicaCount=2",
                        "--set", "watchNamespaces={team-a}")
    assert [d["metadata"]["namespace"] for d in ns_docs if d["kind"] == "KopfPeering"] == ["team-a"]
    assert not [d for d in _template() if d["kind"] in ("PodDisruptionBudget", "ClusterKopfPeering")]


def test_optional_objects_are_toggles() -> None:
    off = {d["kind"] for d in _template()}
    assert not off & {"NetworkPolicy", "PrometheusRule", "ConfigMap", "ServiceMonitor"}
    docs = _template("--set", "networkPolicy.enabled=true", "--set", "dashboard.enabled=true",
                     "--set", "prometheusRule.enabled=true",
                     "--set", "metrics.serviceMonitor.enabled=true")
    kinds = {d["kind"]: d for d in docs}
    assert kinds["NetworkPolicy"]["spec"]["policyTypes"] == ["Ingress"]
    dashboard = kinds["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["mlops-operator.json"])
    # the project's dashboard (dashboards/, linked into the chart like crds/ and rules/)
    assert board == json.loads((REPO / "dashboards" / "mlops-operator.json").read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    assert "mlops_stage_total" in exprs and "mlops_runtime_requests_total" in exprs
    rule_groups = kinds["PrometheusRule"]["spec"]["groups"]
    assert rule_groups and all(g["rules"] for g in rule_groups)


@pytest.mark.integration
def test_notes_say_what_to_run_next_and_warn_without_mlflow(cluster: Cluster) -> None:
    # helm template does not render NOTES.txt; `helm install --dry-run=client` does
    out = subprocess.run(
        [_helm(), "install", "mlops", str(CHART), "--dry-run=client",
         "--namespace", "mlops-system"], capture_output=True, text=True, env=cluster.env)
    assert out.returncode == 0, out.stderr
    notes_text = out.stdout.split("NOTES:", 1)[1]
    assert "rollout status deployment/mlops-mlops-operator" in notes_text
    assert "WARNING: mlflow.trackingUri is empty" in notes_text
    out = subprocess.run(
        [_helm(), "install", "mlops", str(CHART), "--dry-run=client",
         "--set", "mlflow.trackingUri=http://mlflow:5000"], capture_output=True, text=True,
        env=cluster.env)
    assert "WARNING" not in out.stdout.split("NOTES:", 1)[1]


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
    for extra in ([], ["--set", "watchNamespaces={" + namespace + "}", "--set", "peering=mlops",
                       "--set", "replicaCount=2", "--set", "networkPolicy.enabled=true",
                       "--set", "dashboard.enabled=true"]):
        # --no-hooks: the peering object's kind only exists once its CRD is installed
        out = subprocess.run(
            [_helm(), "template", "mlops", str(CHART), "--namespace", namespace, *KUBE,
             "--no-hooks", "--set", "mlflow.enabled=true", *extra],
            capture_output=True, text=True, check=True,
        )
        res = cluster.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-",
                              input=out.stdout, check=False)
        assert res.returncode == 0, res.stderr
        assert "deployment.apps/mlops-mlops-operator serverside-applied (server dry run)" in res.stdout
        if extra:
            assert "poddisruptionbudget.policy/mlops-mlops-operator serverside-applied" in res.stdout
            assert "role.rbac.authorization.k8s.io/mlops-mlops-operator serverside-applied" in res.stdout


def test_alert_receiver_reads_only_its_token_secret() -> None:
    off = _template()
    dep = next(d for d in off if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOPS_ALERT_RECEIVER_PORT"] == "0"
    docs = _template("--set", "alertReceiver.enabled=true",
                     "--set", "alertReceiver.tokenSecret.name=am-token")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOPS_ALERT_RECEIVER_TOKEN_SECRET_NAME"] == "am-token"
    assert env["MLOPS_ALERT_RECEIVER_TOKEN_SECRET_NAMESPACE"] == "mlops-system"
    svc = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-alerts"))
    assert svc["spec"]["ports"][0]["port"] == 8082
    [token_role] = [d for d in docs if d["kind"] == "Role"]
    assert token_role["metadata"]["namespace"] == "mlops-system"
    assert token_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                    "resourceNames": ["am-token"], "verbs": ["get"]}]
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert ("mlops.dev", "trainingruns", "create") in _rules(role)
    assert ("mlops.dev", "trainingruns", "create") not in _rules(
        next(d for d in off if d["kind"] == "ClusterRole"))
    out = subprocess.run([_helm(), "template", "mlops", str(CHART), *KUBE,
                          "--set", "alertReceiver.enabled=true"], capture_output=True, text=True)
    assert out.returncode != 0 and "at '/alertReceiver/tokenSecret/name'" in out.stderr
