"""Namespaced mode (`watchNamespaces`): Roles in those namespaces only, nothing but kopf's reads
cluster-wide; the operator reconciles there and cannot touch another namespace."""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Iterator

import pytest
import yaml
from chart_stack import (
    EXAMPLES,
    RELEASE,
    RELEASE_NS,
    ChartStack,
    can_i_matrix,
    exercised_rights,
    gitops_apply,
    granted_rights,
    kube_json,
)

from mlops_localstack.cluster import poll

pytestmark = [pytest.mark.integration, pytest.mark.install]

USER = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}-mlops-operator"


@pytest.fixture(scope="module")
def scoped(chart_stack: ChartStack) -> Iterator[tuple[str, str, str]]:
    """(watched namespace, other namespace, install time) with a namespaced release."""
    stack = chart_stack
    if stack.release_exists():
        stack.uninstall()
    watched, other = stack.namespace("team-a"), stack.namespace("team-b")
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    stack.install(*stack.values(watchNamespaces=[watched]))
    try:
        yield watched, other, since
    finally:
        if stack.release_exists():
            stack.uninstall()


def test_only_the_watched_namespace_is_reconciled(chart_stack: ChartStack,
                                                  scoped: tuple[str, str, str]) -> None:
    watched, other, _ = scoped
    doc = yaml.safe_load((EXAMPLES / "trainingrun.yaml").read_text())
    doc["metadata"]["name"] = "scoped"
    doc["spec"]["register"] = None
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    body = yaml.safe_dump(doc)
    # the other namespace's object first: were it in scope, it would be reconciled first
    chart_stack.cluster.kubectl("apply", "-n", other, "-f", "-", input=body)
    chart_stack.cluster.kubectl("apply", "-n", watched, "-f", "-", input=copy.deepcopy(body))
    poll("the watched namespace's TrainingRun to be reconciled",
         lambda: ((kube_json(chart_stack, "get", "tr", "scoped", "-n", watched) or {})
                  .get("status") or {}).get("mlflowRunId"), timeout=180, interval=1)
    outside = kube_json(chart_stack, "get", "tr", "scoped", "-n", other)
    assert outside is not None and not outside.get("status"), outside.get("status")
    assert not (outside["metadata"].get("finalizers") or [])


def test_can_i_matrix_namespaced(chart_stack: ChartStack, scoped: tuple[str, str, str]) -> None:
    watched, other, _ = scoped
    cases = [
        ("create", "jobs.batch", watched, "yes"),
        ("patch", "trainingruns.mlops.dev/status", watched, "yes"),
        ("patch", "deployments.apps", watched, "yes"),
        ("create", "jobs.batch", other, "no"),
        ("list", "trainingruns.mlops.dev", other, "no"),
        ("patch", "deployments.apps", other, "no"),
        ("get", "configmaps", other, "no"),
        ("get", "secrets", watched, "no"),
        ("get", "secrets", other, "no"),
        ("list", "trainingruns.mlops.dev", "", "no"),
        ("list", "namespaces", "", "yes"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", "", "yes"),
        ("list", "nodes", "", "no"),
        ("list", "certificates.cert-manager.io", watched, "no"),
    ]
    rows = can_i_matrix(chart_stack, USER, watched, cases)
    assert [r[3] for r in rows] == [c[3] for c in cases], rows


def test_namespaced_rbac_is_what_kopf_and_the_operator_exercise(
        chart_stack: ChartStack, scoped: tuple[str, str, str]) -> None:
    """Cluster-scoped requests are exactly the ClusterRole; in-namespace ones fit the Role."""
    watched, _, since = scoped
    gitops_apply(chart_stack, EXAMPLES / "modelversion-manual.yaml", watched)
    poll("the ModelVersion to fail (placeholder run)",
         lambda: ((kube_json(chart_stack, "get", "mv", "iris-manual", "-n", watched) or {})
                  .get("status") or {}).get("phase") == "Failed", timeout=120, interval=1)
    cluster_scoped = exercised_rights(chart_stack, USER, since, namespaced=False)
    in_namespace = exercised_rights(chart_stack, USER, since, namespaced=True)
    cluster_role = json.loads(chart_stack.cluster.kubectl(
        "get", "clusterrole", f"{RELEASE}-mlops-operator", "-o", "json").stdout)
    role = json.loads(chart_stack.cluster.kubectl(
        "get", "role", f"{RELEASE}-mlops-operator", "-n", watched, "-o", "json").stdout)
    print("cluster-scoped:", sorted(cluster_scoped), "\nin the namespace:", sorted(in_namespace))
    assert not [k for k, code in {**cluster_scoped, **in_namespace}.items() if code == 403]
    assert set(cluster_scoped) == granted_rights(cluster_role["rules"])
    assert set(in_namespace) <= granted_rights(role["rules"])
