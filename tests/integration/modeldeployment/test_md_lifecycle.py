"""ModelDeployment lifecycle: weight edits without restarts, A/B analysis per variant and a
rejected query, garbage collection."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mdhelpers import MD, manifest, send

pytestmark = pytest.mark.integration


def test_editing_weights_moves_traffic_within_seconds_without_restarting_pods(
    node: Any, md: MD, model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    md.apply(manifest("w", name, "builtin", weights=(100, 0)))
    md.wait_status("w", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    url = md.router_url("w")
    assert set(send(url, name, 200)) == {v1}
    pods = {p["metadata"]["uid"] for p in md.get("pods", selector="mlops.dev/deployment=w")}
    md.apply(manifest("w", name, "builtin", weights=(0, 100)))
    md.wait("all traffic on the challenger", lambda: set(send(url, name, 50)) == {v2},
            timeout=30)
    after = md.get("pods", selector="mlops.dev/deployment=w")
    assert {p["metadata"]["uid"] for p in after} == pods
    assert all(cs.get("restartCount", 0) == 0 for p in after
               for cs in p["status"].get("containerStatuses") or [])
    assert md.status("w")["traffic"] == "champion=0 challenger=100"


def test_deleting_the_modeldeployment_removes_everything_it_created(
    node: Any, md: MD, model: tuple[str, str, str], kubectl: Any, namespace: str,
) -> None:
    name, v1, v2 = model
    md.apply(manifest("gone", name, "builtin"))
    md.wait_status("gone", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    kinds = "deployments,services,configmaps,serviceaccounts,roles,rolebindings"
    assert md.get(kinds, selector="mlops.dev/deployment=gone")
    kubectl("delete", "modeldeployment", "gone", "-n", namespace)
    md.wait("every child to be garbage-collected",
            lambda: md.get(kinds + ",pods", selector="mlops.dev/deployment=gone") == [],
            timeout=120)


def test_ab_reports_analysis_per_variant_and_names_a_query_prometheus_rejects(
    node: Any, prometheus: Any, md: MD, model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    served = {"name": "served", "successCondition": "result >= 0",
              "query": 'sum(mlops_runtime_model_ready{namespace="{{namespace}}",'
                       'deployment="{{deployment}}",variant="{{variant}}",version="{{version}}"})'}
    broken = {"name": "broken", "query": "sum(rate(", "successCondition": "result < 1"}
    doc = manifest("ab", name, "builtin")
    doc["spec"]["rollout"] = {"strategy": "AB", "analysis": {
        "prometheus": {"address": prometheus.url}, "interval": "2s",
        "metrics": [served, broken]}}
    md.apply(doc)

    def rejected(s: dict[str, Any]) -> bool:
        c = md.condition("ab", "Degraded")
        return c.get("reason") == "AnalysisQueryRejected" and "broken" in c.get("message", "")

    st = md.wait_status("ab", rejected, "the rejected query named", timeout=240)
    assert st["phase"] == "Degraded"
    doc["spec"]["rollout"]["analysis"]["metrics"] = [served]
    md.apply(doc)

    def measured(s: dict[str, Any]) -> bool:
        rows = (s.get("rollout") or {}).get("measurements") or []
        return s.get("phase") == "Ready" and {(m["variant"], m["verdict"]) for m in rows} == {
            ("champion", "Successful"), ("challenger", "Successful")}

    st = md.wait_status("ab", measured, "a Successful round per variant", timeout=180)
    assert st["traffic"] == "champion=70 challenger=30"  # AB never moves the weights
    assert md.condition("ab", "Degraded")["status"] == "False"


def _applies(log: str, namespace: str) -> list[str]:
    """The operator's server-side applies (PATCH with its field manager) in one namespace."""
    return [line for line in log.splitlines() if '"PATCH /' in line
            and f"/namespaces/{namespace}/" in line and "fieldManager=mlops-operator" in line]


def test_a_settled_deployment_is_not_re_applied_and_a_touched_child_is_restored(
    node: Any, md: MD, model: tuple[str, str, str], kubectl: Any, namespace: str,
    operator: Any,
) -> None:
    """Passes of a settled ModelDeployment send no apply while nothing changed (before, each
    pass applied all ten children); a child someone edits or deletes is put back at once (its
    watch wakes the pass)."""
    name, v1, _ = model
    md.apply(manifest("quiet", name, "builtin", weights=(100, 0)))
    md.wait_status("quiet", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    assert _applies(operator.logs(), namespace)  # the children were applied once

    def passes() -> int:
        return operator.logs().count(f"ModelDeployment {namespace}/quiet: pass at")

    def versions() -> dict[str, str]:
        return {d["metadata"]["name"]: d["metadata"]["resourceVersion"]
                for d in md.get("deployments", selector="mlops.dev/deployment=quiet")}

    deployments, before = versions(), len(_applies(operator.logs(), namespace))
    for i in range(3):  # a metadata edit wakes a pass that has nothing to change
        start = passes()
        kubectl("annotate", "modeldeployment", "quiet", "-n", namespace, f"touch={i}",
                "--overwrite")
        md.wait(f"pass {i + 1}", lambda start=start: passes() > start, timeout=30)
    moved = {n for n, v in versions().items() if deployments.get(n) != v}
    applied = [line for line in _applies(operator.logs(), namespace)[before:]
               if not any(f"/deployments/{n}?" in line for n in moved)]
    assert applied == [], f"a settled ModelDeployment's passes applied children: {applied}"
    # drift is repaired: an edited ConfigMap and a deleted Service come back as applied
    [config] = md.get("configmaps", selector="mlops.dev/deployment=quiet")
    cm = config["metadata"]["name"]
    [key] = config["data"]
    kubectl("patch", "configmap", cm, "-n", namespace, "--type=merge",
            "-p", json.dumps({"data": {key: "variants: []\n"}}))
    services = md.get("services", selector="mlops.dev/deployment=quiet")
    gone = services[0]["metadata"]["name"]
    kubectl("delete", "service", gone, "-n", namespace)
    # a Deployment's spec edited (its generation moves, unlike its status updates, which are
    # not re-applied)
    kubectl("scale", "deployment", "quiet-champion", "-n", namespace, "--replicas=3")

    def repaired() -> bool:
        data = md.get("configmaps", selector="mlops.dev/deployment=quiet")[0]["data"]
        names = {s["metadata"]["name"] for s in
                 md.get("services", selector="mlops.dev/deployment=quiet")}
        replicas = md.get("deployment", "quiet-champion")["spec"]["replicas"]
        return data == config["data"] and gone in names and replicas == 1

    md.wait("the ConfigMap, the Service and the replicas restored", repaired, timeout=30)
    url = md.router_url("quiet")
    assert set(send(url, name, 20)) == {v1}
