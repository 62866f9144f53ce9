"""ModelDeployment behaviour beyond the happy path: traffic modes through the controller, bad
input that recovers by itself, weight edits without restarts, garbage collection."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mdhelpers import MD, register_versions, send

from mlops_localstack.gateway_api import ensure_gateway_api_crds

pytestmark = pytest.mark.integration


@pytest.fixture
def md(kubectl: Any, namespace: str, operator: Any) -> MD:
    return MD(kubectl, namespace, operator)


@pytest.fixture(scope="session")
def gateway_api(cluster: Any) -> list[str]:
    return cluster.apply_crds(ensure_gateway_api_crds())


@pytest.fixture
def model(mlflow_server: Any) -> tuple[str, str, str]:
    """A registered model with two good versions; champion → v1."""
    from mlflow import MlflowClient

    name = f"md-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_versions(mlflow_server.tracking_uri, name, ["good", "good"])
    MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(name, "champion", v1)
    return name, v1, v2


def manifest(name: str, model: str, router: str, replicas: int = 1,
             uris: tuple[str, str] | None = None, weights: tuple[int, int] = (70, 30),
             **extra_meta: Any) -> dict[str, Any]:
    a, b = uris or (f"models:/{model}@champion", f"models:/{model}/2")
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, **extra_meta},
        "spec": {"model": model, "traffic": {"router": router},
                 "variants": [{"name": "champion", "modelUri": a, "weight": weights[0],
                               "replicas": replicas},
                              {"name": "challenger", "modelUri": b, "weight": weights[1],
                               "replicas": replicas}]},
    }


def test_gateway_api_mode_renders_a_weighted_httproute(
    gateway_api: Any, node: Any, md: MD, model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    md.apply(manifest("gw", name, "gateway-api", annotations={
        "mlops.dev/gateway-parent-refs": "infra/public:http"}))
    route = md.wait("the HTTPRoute", lambda: md.get("httproute", "gw"), timeout=120)
    (rule,) = route["spec"]["rules"]
    assert {b["name"]: b["weight"] for b in rule["backendRefs"]} == {
        "gw-champion": 70, "gw-challenger": 30}
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra",
         "name": "public", "sectionName": "http"}]
    assert md.get("deployment", "gw-router") is None  # no builtin router in this mode
    st = md.wait_status("gw", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    assert st["traffic"] == "champion=70 challenger=30" and "url" not in st


def test_service_mode_has_one_service_over_every_variant(
    node: Any, md: MD, model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    md.apply(manifest("svc", name, "service"))
    md.wait_status("svc", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    svc = md.get("service", "svc")
    selector = svc["spec"]["selector"]
    assert selector["app.kubernetes.io/component"] == "model-server"
    assert "mlops.dev/variant" not in selector
    pods = md.get("pods", selector=",".join(f"{k}={v}" for k, v in selector.items()))
    assert {p["metadata"]["labels"]["mlops.dev/version"] for p in pods} == {v1, v2}


def test_bad_variants_are_reported_by_name_and_recover_by_themselves(
    node: Any, mlflow_server: Any, md: MD, model: tuple[str, str, str],
) -> None:
    from mlflow import MlflowClient

    name, v1, v2 = model
    md.apply(manifest("bad", name, "builtin", uris=(f"models:/{name}@missing",
                                                    f"models:/{name}/9")))

    def degraded_naming_both(s: dict[str, Any]) -> bool:
        msg = md.condition("bad", "Degraded").get("message", "")
        return "variant champion: alias missing" in msg and "variant challenger" in msg \
            and "no registered version 9" in msg

    st = md.wait_status("bad", degraded_naming_both, "both variants reported", timeout=120)
    assert st["phase"] == "Pending"  # nothing is served yet
    warnings = [e for e in md.events("bad") if e["type"] == "Warning"]
    assert any("alias missing" in e["message"] for e in warnings), warnings
    # fixed outside the cluster: the alias appears; the pinned version is fixed in the spec
    MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(name, "missing", v1)
    md.apply(manifest("bad", name, "builtin", uris=(f"models:/{name}@missing",
                                                    f"models:/{name}/{v2}")))
    st = md.wait_status("bad", lambda s: s.get("phase") == "Ready", "recovered", timeout=240)
    assert (st["champion"], st["challenger"]) == (v1, v2)
    assert md.condition("bad", "Degraded")["status"] == "False"
    assert md.operator.logs().count("reconcile failed") == 0


def test_an_image_that_never_becomes_ready_is_named_in_the_status(
    node: Any, md: MD, model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    doc = manifest("crash", name, "service")
    doc["spec"]["runtime"] = {"env": [{"name": "MLOPS_RUNTIME_PORT", "value": "not-a-port"}]}
    md.apply(doc)

    def says_why(s: dict[str, Any]) -> bool:
        msg = md.condition("crash", "Progressing").get("message", "")
        return s.get("phase") == "Progressing" and "champion" in msg and (
            "CrashLoopBackOff" in msg or "Error" in msg)

    md.wait_status("crash", says_why, "the waiting reason in Progressing", timeout=180)


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
