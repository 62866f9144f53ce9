"""ModelDeployment behaviour beyond the happy path: traffic modes through the controller, and bad
input (unresolvable variants, pods that never become ready) that is named and recovers."""

from __future__ import annotations

from typing import Any

import pytest
from mdhelpers import MD, manifest

from mlops_localstack.gateway_api import ensure_gateway_api_crds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def gateway_api(cluster: Any) -> list[str]:
    return cluster.apply_crds(ensure_gateway_api_crds())


def test_gateway_api_mode_renders_a_weighted_httproute_and_grpcroute(
    gateway_api: Any, node: Any, md: MD, kubectl: Any, namespace: str,
    model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    md.apply(manifest("gw", name, "gateway-api", annotations={
        "mlops.dev/gateway-parent-refs": "infra/public:http",
        "mlops.dev/gateway-grpc-parent-refs": "infra/public:grpc"}))
    route = md.wait("the HTTPRoute", lambda: md.get("httproute", "gw"), timeout=120)
    grpc = md.wait("the GRPCRoute", lambda: md.get("grpcroute", "gw"), timeout=60)
    (rule,) = grpc["spec"]["rules"]
    assert {(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]} == {
        ("gw-champion", 8081, 70), ("gw-challenger", 8081, 30)}
    assert grpc["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra",
         "name": "public", "sectionName": "grpc"}]
    (rule,) = route["spec"]["rules"]
    assert {b["name"]: b["weight"] for b in rule["backendRefs"]} == {
        "gw-champion": 70, "gw-challenger": 30}
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra",
         "name": "public", "sectionName": "http"}]
    assert md.get("deployment", "gw-router") is None  # no builtin router in this mode
    st = md.wait_status("gw", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    assert st["traffic"] == "champion=70 challenger=30" and "url" not in st
    # gRPC without Gateways of its own: the GRPCRoute goes, the HTTPRoute stays
    kubectl("annotate", "modeldeployment", "gw", "mlops.dev/gateway-grpc-parent-refs-", "-n",
            namespace)
    md.wait("the GRPCRoute pruned", lambda: md.get("grpcroute", "gw") is None, timeout=60)
    assert md.get("httproute", "gw") is not None


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


def test_pods_that_never_become_ready_are_named_in_the_status(
    node: Any, md: MD, model: tuple[str, str, str],
) -> None:
    """The serving pods run but cannot load their model (MLflow unreachable from them): the
    deployment stays Progressing and says which variant waits and why."""
    name, v1, v2 = model
    doc = manifest("stuck", name, "service")
    doc["spec"]["runtime"] = {"env": [{"name": "MLFLOW_TRACKING_URI",
                                       "value": "http://127.0.0.1:9"}]}
    md.apply(doc)

    def says_why(s: dict[str, Any]) -> bool:
        msg = md.condition("stuck", "Progressing").get("message", "")
        return s.get("phase") == "Progressing" and "champion" in msg and "not ready" in msg

    md.wait_status("stuck", says_why, "the waiting reason in Progressing", timeout=180)
    assert md.condition("stuck", "Ready")["status"] == "False"


def test_a_child_the_apiserver_refuses_is_reported_and_the_rest_applied(
    node: Any, md: MD, kubectl: Any, namespace: str, model: tuple[str, str, str],
) -> None:
    """A quota of zero Services: the apiserver's admission refuses every Service of the
    deployment. The refusal, in the apiserver's words, is a Degraded condition and a Warning
    Event; the other children are applied all the same; once the quota goes, it is Ready."""
    name, v1, v2 = model
    md.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"},
              "spec": {"hard": {"services": "0"}}})
    md.apply(manifest("quota", name, "builtin"))

    def refused(s: dict[str, Any]) -> bool:
        return md.condition("quota", "Degraded").get("reason") == "ApplyRefused"

    st = md.wait_status("quota", refused, "the refused Services reported", timeout=120)
    message = md.condition("quota", "Degraded")["message"]
    for service in ("quota", "quota-champion", "quota-challenger"):  # the router's, the variants'
        assert f'services "{service}" is forbidden: exceeded quota: no-services' in message, message
    assert st["phase"] == "Degraded" and md.condition("quota", "Ready")["status"] == "False"
    warnings = [e for e in md.events("quota") if e["type"] == "Warning"]
    assert any("no-services" in e["message"] for e in warnings), warnings
    assert md.get("service", "quota") is None
    for deployment in ("quota-champion", "quota-challenger", "quota-router"):
        assert md.get("deployment", deployment) is not None, deployment

    kubectl("delete", "resourcequota", "no-services", "-n", namespace)
    st = md.wait_status("quota", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    assert md.condition("quota", "Degraded")["status"] == "False"
    assert md.get("service", "quota") is not None
    assert md.operator.logs().count("reconcile failed") == 0


def test_a_bad_gateway_reference_is_a_condition_until_it_is_fixed(
    md: MD, kubectl: Any, namespace: str, model: tuple[str, str, str],
) -> None:
    name, v1, v2 = model
    md.apply(manifest("refs", name, "builtin",
                      annotations={"mlops.dev/gateway-parent-refs": "a/b/c"}))
    md.wait_status("refs", lambda s: s.get("phase") == "Failed", "Failed", timeout=60)
    ready = md.condition("refs", "Ready")
    assert ready["reason"] == "InvalidParentRefs" and "'a/b/c'" in ready["message"], ready
    warnings = [e for e in md.events("refs") if e["type"] == "Warning"]
    assert any(e["reason"] == "InvalidParentRefs" for e in warnings), warnings
    assert md.get("deployment", "refs-champion") is None

    kubectl("annotate", "modeldeployment", "refs", "mlops.dev/gateway-parent-refs-", "-n",
            namespace)
    md.wait("the children once the reference is gone",
            lambda: md.get("deployment", "refs-champion"), timeout=60)
    md.wait_status("refs", lambda s: md.condition("refs", "Ready").get("reason")
                   != "InvalidParentRefs", "the condition cleared", timeout=60)
