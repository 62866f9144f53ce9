"""What the ModelDeployment builders render, created for real in a real apiserver.

No operator runs here: the test plays the controller's "build → create" half, with a real
ModelDeployment (the example) as the owner, and checks what the apiserver and the controllers
of kube-controller-manager make of the objects: schema and CEL validation (the official Gateway
API CRDs included), pods created from the templates and selected by the right Services, RBAC
of the router, Pod Security ``restricted`` admission, and garbage collection by owner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kube_json
import pytest
import yaml

from mlops_localstack.cluster import Cluster, poll
from mlops_localstack.gateway_api import ensure_gateway_api_crds
from mlops_operator.api import ModelDeploymentSpec
from mlops_operator.builders.autoscaling import build_hpa
from mlops_operator.builders.common import restricted_security_context
from mlops_operator.builders.modeldeployment import (
    build_variant_deployment,
    build_variant_service,
    pod_from_template,
    server_selector,
)
from mlops_operator.builders.router import (
    build_router_configmap,
    build_router_deployment,
    build_router_rbac,
    build_router_service,
)
from mlops_operator.builders.traffic import (
    Backend,
    build_grpc_route,
    build_http_route,
    build_service_mode_service,
    effective_weights,
    spec_weights,
)

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "iris" / "modeldeployment.yaml"
IMAGE = "ghcr.io/mlops-operator/mlops-runtime:0.1.0"
TRACKING = "http://mlflow.mlops.svc:5000"
VERSIONS = {"champion": "3", "challenger": "5"}
CANARY_VERSION = "4"
GATEWAY = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]


@dataclass
class Owner(kube_json.Kube):
    """The ModelDeployment created from the example, and kubectl in its namespace."""

    name: str
    uid: str
    spec: ModelDeploymentSpec

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, as the operator's field manager; the stored object."""
        out = self.kubectl(
            "apply", "--server-side", "--field-manager=mlops-operator", "-o", "json",
            "-n", self.namespace, "-f", "-", input=json.dumps(manifest),
        )  # fmt: skip
        return json.loads(out.stdout)

    def pods_of(self, selector: dict[str, str]) -> set[str]:
        """Names of the ReplicaSets owning the pods a selector picks."""
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return {
            ref["name"].rsplit("-", 1)[0]  # Deployment name of the ReplicaSet
            for pod in self.get("pods", selector=text)
            for ref in pod["metadata"].get("ownerReferences") or []
        }


@pytest.fixture(scope="session")
def gateway_api(cluster: Cluster) -> list[str]:
    """The official Gateway API CRDs (standard channel), installed once and Established."""
    return cluster.apply_crds(ensure_gateway_api_crds())


def _owner(kubectl: Callable[..., Any], namespace: str, **spec_changes: Any) -> Owner:
    doc = yaml.safe_load(EXAMPLE.read_text())
    for key, value in spec_changes.items():
        doc["spec"][key] = {**doc["spec"].get(key, {}), **value}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    stored = json.loads(
        kubectl("get", "modeldeployment", doc["metadata"]["name"], "-n", namespace,
                "-o", "json").stdout
    )  # fmt: skip
    return Owner(
        kubectl,
        namespace,
        stored["metadata"]["name"],
        stored["metadata"]["uid"],
        ModelDeploymentSpec.model_validate(stored["spec"]),  # with the CRD's defaults
    )


@pytest.fixture
def owner(crds: list[str], kubectl: Callable[..., Any], namespace: str) -> Owner:
    return _owner(kubectl, namespace)


def variant_objects(o: Owner, canary: bool = True) -> Iterator[dict[str, Any]]:
    """Deployment, Service (and HPA) of every variant, plus a canary of the champion."""
    roles = [(v, VERSIONS[v], "stable") for v in VERSIONS]
    if canary:
        roles.append(("champion", CANARY_VERSION, "canary"))
    for variant, version, role in roles:
        yield build_variant_deployment(
            o.name, o.namespace, o.uid, o.spec, variant, version,
            tracking_uri=TRACKING, default_image=IMAGE, role=role,  # type: ignore[arg-type]
        )  # fmt: skip
        yield build_variant_service(o.name, o.namespace, o.uid, o.spec, variant, role)  # type: ignore[arg-type]
        hpa = build_hpa(o.name, o.namespace, o.uid, o.spec, variant, role)  # type: ignore[arg-type]
        if hpa is not None:
            yield hpa


def router_objects(o: Owner) -> list[dict[str, Any]]:
    weights = effective_weights(spec_weights(o.spec), ("champion", 10))
    return [
        *build_router_rbac(o.name, o.namespace, o.uid, o.spec),
        build_router_configmap(o.name, o.namespace, o.uid, o.spec, weights),
        build_router_deployment(o.name, o.namespace, o.uid, o.spec, default_image=IMAGE),
        build_router_service(o.name, o.namespace, o.uid, o.spec),
    ]


def assert_owned(obj: dict[str, Any], o: Owner) -> None:
    (ref,) = obj["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "ModelDeployment",
        o.name,
        o.uid,
        True,
    )
    assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlops-operator"
    assert obj["metadata"]["labels"]["mlops.dev/deployment"] == o.name


# -- gateway-api -------------------------------------------------------------------------------


def test_http_route_is_accepted_with_its_weights_and_mirror(
    gateway_api: list[str], crds: list[str], kubectl: Callable[..., Any], namespace: str
) -> None:
    assert "customresourcedefinition.apiextensions.k8s.io/httproutes.gateway.networking.k8s.io" in (
        gateway_api
    )
    o = _owner(
        kubectl, namespace, traffic={"router": "gateway-api",
                                     "mirror": {"variant": "challenger", "percent": 20}},
    )  # fmt: skip
    weights = effective_weights(spec_weights(o.spec), ("champion", 50))
    route = build_http_route(o.name, o.namespace, o.uid, o.spec, weights, GATEWAY)
    stored = o.apply(route)
    assert_owned(stored, o)
    assert stored["spec"]["parentRefs"][0]["name"] == "public"
    (rule,) = stored["spec"]["rules"]
    assert {(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]} == {
        ("iris-champion", 8080, 45),
        ("iris-champion-canary", 8080, 45),
        ("iris-challenger", 8080, 10),
    }
    (mirror,) = rule["filters"]
    assert mirror["requestMirror"]["backendRef"]["name"] == "iris-challenger"
    assert mirror["requestMirror"]["percent"] == 20

    # the split moves by patching the same route (what a canary step does)
    final = effective_weights(spec_weights(o.spec), ("champion", 100))
    stored = o.apply(build_http_route(o.name, o.namespace, o.uid, o.spec, final, GATEWAY))
    weights_now = {b["name"]: b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]}
    assert weights_now == {"iris-champion": 0, "iris-champion-canary": 90, "iris-challenger": 10}

    # the CRD really validates (not a schemaless stand-in): a negative weight is refused
    bad = json.loads(json.dumps(route))
    bad["metadata"]["name"] = "bad-weight"
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    out = kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                  input=json.dumps(bad), check=False)  # fmt: skip
    assert out.returncode != 0 and "weight" in out.stderr, out.stderr


def test_grpc_route_is_accepted_with_the_same_split_on_the_grpc_port(
    gateway_api: list[str], crds: list[str], kubectl: Callable[..., Any], namespace: str
) -> None:
    o = _owner(
        kubectl, namespace, traffic={"router": "gateway-api",
                                     "mirror": {"variant": "challenger", "percent": 20}},
    )  # fmt: skip
    weights = effective_weights(spec_weights(o.spec), ("champion", 50))
    grpc_gateway = [{**GATEWAY[0], "sectionName": "grpc"}]
    stored = o.apply(build_grpc_route(o.name, o.namespace, o.uid, o.spec, weights, grpc_gateway))
    assert stored["kind"] == "GRPCRoute" and stored["metadata"]["name"] == o.name
    assert_owned(stored, o)
    assert stored["spec"]["parentRefs"][0]["sectionName"] == "grpc"
    (rule,) = stored["spec"]["rules"]
    assert {(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]} == {
        ("iris-champion", 8081, 45),
        ("iris-champion-canary", 8081, 45),
        ("iris-challenger", 8081, 10),
    }
    (mirror,) = rule["filters"]
    assert mirror["requestMirror"] == {
        "backendRef": {"group": "", "kind": "Service", "name": "iris-challenger", "port": 8081},
        "percent": 20}


# -- variants: Deployments, Services, HPAs -----------------------------------------------------


def test_variant_objects_are_accepted_and_services_select_their_own_pods(owner: Owner) -> None:
    o = owner
    stored = [o.apply(obj) for obj in variant_objects(o)]
    for obj in stored:
        assert_owned(obj, o)
    deployments = {d["metadata"]["name"]: d for d in stored if d["kind"] == "Deployment"}
    assert set(deployments) == {"iris-champion", "iris-challenger", "iris-champion-canary"}
    assert not [d for d in stored if d["kind"] == "HorizontalPodAutoscaler"]
    for name, dep in deployments.items():
        template = dep["spec"]["template"]
        pod = template["spec"]
        (container,) = pod["containers"]
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "8080"
        assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        for key, value in restricted_security_context().items():
            assert container["securityContext"][key] == value, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["readinessProbe"]["grpc"] == {"port": 8081, "service": ""}
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0  # kept by the server
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert deployments["iris-champion"]["spec"]["replicas"] == 2
    labels = deployments["iris-champion-canary"]["spec"]["template"]["metadata"]["labels"]
    assert (labels["mlops.dev/variant"], labels["mlops.dev/version"]) == ("champion", "4")
    assert labels["mlops.dev/role"] == "canary"

    # kube-controller-manager makes pods from the templates; each Service selects exactly the
    # pods of its own Deployment (stable and canary never share a Service)
    for variant, role in (("champion", "stable"), ("challenger", "stable"), ("champion", "canary")):
        service = o.get("service", f"iris-{variant}" + ("-canary" if role == "canary" else ""))
        assert service["spec"]["selector"] == server_selector(o.name, variant, role)  # type: ignore[arg-type]
        expected = {service["metadata"]["name"]}
        poll(
            f"pods of {expected} behind its Service",
            lambda s=service, e=expected: o.pods_of(s["spec"]["selector"]) == e,  # type: ignore[misc]
            timeout=60,
        )

    def champion_pods() -> list[dict[str, Any]] | None:
        pods = o.get("pods", selector="mlops.dev/role=stable,mlops.dev/variant=champion")
        return pods if len(pods) == 2 else None

    pods = poll("the 2 stable champion pods", champion_pods, timeout=60)
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["MLOPS_RUNTIME_MODEL_URI"] == "models:/iris/3"


def test_hpa_owns_the_replicas_when_autoscaling(
    crds: list[str], kubectl: Callable[..., Any], namespace: str
) -> None:
    o = _owner(
        kubectl, namespace,
        runtime={"autoscaling": {"minReplicas": 2, "maxReplicas": 4,
                                 "targetCPUUtilizationPercentage": 70,
                                 "targetRequestsPerSecond": 12.5}},
    )  # fmt: skip
    stored = [o.apply(obj) for obj in variant_objects(o, canary=False)]
    hpas = {h["metadata"]["name"]: h for h in stored if h["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"iris-champion", "iris-challenger"}
    for name, hpa in hpas.items():
        assert_owned(hpa, o)
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == {"Resource", "Pods"}
    for dep in (d for d in stored if d["kind"] == "Deployment"):
        # no replicas in what we applied: the field is not ours, the HPA may set it
        full = json.loads(
            o.kubectl("get", "deployment", dep["metadata"]["name"], "-n", o.namespace,
                      "-o", "json", "--show-managed-fields").stdout
        )  # fmt: skip
        managers = {
            m["manager"]: json.dumps(m.get("fieldsV1", {}))
            for m in full["metadata"]["managedFields"]
        }
        assert '"f:template"' in managers["mlops-operator"]
        assert '"f:replicas"' not in managers["mlops-operator"]

    # the HPA controller scales to minReplicas; the operator's next apply does not undo it
    def replicas() -> int:
        return o.get("deployment", "iris-challenger")["spec"]["replicas"]

    poll("the HPA to scale iris-challenger to minReplicas", lambda: replicas() == 2, timeout=90)
    for obj in variant_objects(o, canary=False):
        o.apply(obj)
    assert replicas() == 2


# -- builtin router ----------------------------------------------------------------------------


def test_router_objects_are_accepted_and_its_role_allows_just_what_it_reads(
    owner: Owner,
) -> None:
    o = owner
    stored = {(obj["kind"], obj["metadata"]["name"]): o.apply(obj) for obj in router_objects(o)}
    for obj in stored.values():
        assert_owned(obj, o)
    cm = stored[("ConfigMap", "iris-router")]
    config = yaml.safe_load(cm["data"]["router.yaml"])
    assert {v["name"]: v["weight"] for v in config["variants"]} == {
        "champion": 81,
        "champion-canary": 9,
        "challenger": 10,
    }
    dep = stored[("Deployment", "iris-router")]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "iris-router"
    svc = stored[("Service", "iris")]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    poll("router pod", lambda: o.pods_of(svc["spec"]["selector"]) == {"iris-router"}, timeout=60)

    who = f"--as=system:serviceaccount:{o.namespace}:iris-router"

    def can(*args: str) -> bool:
        out = o.kubectl("auth", "can-i", *args, "-n", o.namespace, who, check=False)
        return out.stdout.strip() == "yes"

    assert can("get", "configmap/iris-router")
    assert can("list", "endpointslices.discovery.k8s.io")
    assert can("get", "services")
    assert can("list", "pods")
    assert not can("get", "configmap/other")
    assert not can("list", "secrets")
    assert not can("update", "configmap/iris-router")


def test_service_mode_service_selects_every_variant_but_not_the_router(owner: Owner) -> None:
    o = owner
    for obj in [*variant_objects(o), *router_objects(o)]:
        o.apply(obj)
    svc = o.apply(build_service_mode_service(o.name, o.namespace, o.uid, o.spec))
    assert_owned(svc, o)
    assert svc["metadata"]["name"] == "iris"
    poll(
        "the service-mode Service to select every model server and no router",
        lambda: (
            o.pods_of(svc["spec"]["selector"])
            == {"iris-champion", "iris-challenger", "iris-champion-canary"}
        ),
        timeout=60,
    )


# -- Pod Security and garbage collection -------------------------------------------------------


def test_pod_templates_are_admitted_by_the_restricted_pod_security_standard(
    owner: Owner, kubectl: Callable[..., Any]
) -> None:
    o = owner
    kubectl("label", "namespace", o.namespace, "pod-security.kubernetes.io/enforce=restricted")
    objects = [*variant_objects(o, canary=False), *router_objects(o)]
    for obj in objects:
        if obj["kind"] != "Deployment":
            o.apply(obj)  # the router's ServiceAccount must exist for its pod
    deployments = [obj for obj in objects if obj["kind"] == "Deployment"]
    assert len(deployments) == 3

    def dry_run(pod: dict[str, Any]) -> Any:
        return kubectl("create", "--dry-run=server", "-n", o.namespace, "-f", "-",
                       input=json.dumps(pod), check=False)  # fmt: skip

    for dep in deployments:
        out = dry_run(pod_from_template(dep, f"probe-{dep['metadata']['name']}"))
        assert out.returncode == 0, f"{dep['metadata']['name']}: {out.stderr}"
    # the namespace really enforces: the same pod without its securityContext is refused
    loose = pod_from_template(deployments[0], "loose")
    del loose["spec"]["containers"][0]["securityContext"]
    out = dry_run(loose)
    assert out.returncode != 0 and "restricted" in out.stderr, out.stderr


def test_deleting_the_modeldeployment_collects_every_child(
    gateway_api: list[str], owner: Owner, kubectl: Callable[..., Any]
) -> None:
    o = owner
    weights = effective_weights(spec_weights(o.spec))
    children = [
        *variant_objects(o),
        *router_objects(o),
        build_http_route(o.name, o.namespace, o.uid, o.spec, weights, GATEWAY),
        build_grpc_route(o.name, o.namespace, o.uid, o.spec, weights, GATEWAY),
    ]
    for obj in children:
        o.apply(obj)
    kinds = ("deployments,services,configmaps,serviceaccounts,roles,rolebindings,httproutes,"
             "grpcroutes")
    selector = "app.kubernetes.io/managed-by=mlops-operator"
    assert len(o.get(kinds, selector=selector)) == len(children)
    assert Backend("champion") in weights
    kubectl("delete", "modeldeployment", o.name, "-n", o.namespace, "--wait=false")
    poll("garbage collection of the children", lambda: o.get(kinds, selector=selector) == [],
         timeout=90)  # fmt: skip


# -- the rendered objects serve: router + model servers on the node stand-in ----------------------

ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


def _register_two_versions(tracking_uri: str, name: str) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # process-wide: another suite may have moved it
    mlflow.set_experiment(f"md-render-{name}")
    for c in (0.1, 1.0):
        with mlflow.start_run():
            model = LogisticRegression(C=c, max_iter=500).fit(X, y)
            mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name,
                signature=infer_signature(X, model.predict(X)),
            )  # fmt: skip


def _ready_pod_ips(o: Owner, selector: str, count: int) -> list[str] | None:
    pods = [
        p for p in o.get("pods", selector=selector)
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or [])
    ]  # fmt: skip
    return [p["status"]["podIP"] for p in pods] if len(pods) == count else None


@pytest.mark.skipif("config.getoption('--cluster') not in ('auto', 'local')")
def test_rendered_router_and_servers_serve_and_the_split_changes_without_restart(
    crds: list[str], node: Any, mlflow_server: Any, kubectl: Callable[..., Any], namespace: str
) -> None:
    import httpx

    if node is None:
        pytest.skip("needs the local stack's node stand-in")
    model = f"md-render-{namespace[-5:]}"
    _register_two_versions(mlflow_server.tracking_uri, model)
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].pop("retrain")
    doc["spec"]["model"] = model
    doc["spec"]["variants"] = [
        {"name": "champion", "modelUri": f"models:/{model}/1", "weight": 90, "replicas": 1},
        {"name": "challenger", "modelUri": f"models:/{model}/2", "weight": 10, "replicas": 1},
    ]
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    stored = json.loads(kubectl("get", "md", "iris", "-n", namespace, "-o", "json").stdout)
    o = Owner(kubectl, namespace, "iris", stored["metadata"]["uid"],
              ModelDeploymentSpec.model_validate(stored["spec"]))  # fmt: skip

    for variant, version in (("champion", "1"), ("challenger", "2")):
        o.apply(build_variant_deployment(
            o.name, o.namespace, o.uid, o.spec, variant, version,
            tracking_uri=mlflow_server.tracking_uri, default_image=IMAGE,
        ))  # fmt: skip
        o.apply(build_variant_service(o.name, o.namespace, o.uid, o.spec, variant))
    weights = effective_weights(spec_weights(o.spec))
    for obj in [
        *build_router_rbac(o.name, o.namespace, o.uid, o.spec),
        build_router_configmap(o.name, o.namespace, o.uid, o.spec, weights),
        build_router_deployment(o.name, o.namespace, o.uid, o.spec, default_image=IMAGE),
    ]:
        o.apply(obj)

    servers = "app.kubernetes.io/component=model-server"
    poll("both model servers Ready", lambda: _ready_pod_ips(o, servers, 2), timeout=180)
    routers = "app.kubernetes.io/component=router"
    (ip,) = poll("the router Ready (its endpoints found)", lambda: _ready_pod_ips(o, routers, 1),
                 timeout=120)  # fmt: skip
    router_pod = o.get("pods", selector=routers)[0]["metadata"]["uid"]
    url = f"http://{ip}:8080"

    def served(n: int) -> dict[str, int]:
        seen: dict[str, int] = {}
        with httpx.Client(timeout=10, trust_env=False) as client:
            for _ in range(n):
                r = client.post(f"{url}/v2/models/{model}/infer", json=ROW)
                assert r.status_code == 200, r.text
                seen[r.json()["model_version"]] = seen.get(r.json()["model_version"], 0) + 1
        return seen

    seen = served(100)
    assert set(seen) == {"1", "2"} and 88 <= seen["1"] <= 92, seen

    # the whole split moved to the challenger: the router re-reads its ConfigMap, no restart
    flipped = effective_weights({"champion": 0, "challenger": 100})
    o.apply(build_router_configmap(o.name, o.namespace, o.uid, o.spec, flipped))
    poll("the router to apply the new split",
         lambda: httpx.get(f"{url}/router/status", trust_env=False).json()["weights"]
         == {"champion": 0, "challenger": 100}, timeout=30)  # fmt: skip
    assert served(20) == {"2": 20}
    assert o.get("pods", selector=routers)[0]["metadata"]["uid"] == router_pod
    statuses = o.get("pods", selector=routers)[0]["status"]["containerStatuses"]
    assert statuses[0]["restartCount"] == 0
