"""Pure builders for a ModelDeployment's serving children: Deployments, Services, HPAs, router.

No I/O here: the spec (the pydantic model), the pinned version and a few identifiers go in, a
manifest dict comes out. The controller resolves aliases (``models:/iris@champion`` → ``3``)
before it calls these, so every pod of a Deployment serves exactly one registry version.

Objects and names (all ``≤ 63`` characters, shortened with a hash of the owner's name):

===================================  ===========================================================
``<md>-<variant>``                   Deployment + Service + HPA of the variant's stable version
``<md>-<variant>-canary``            the same for a canary of the variant's new version
``<md>``                             the entry Service: the router's pods (``builtin``) or every
                                     model-server pod (``service``, see :mod:`.traffic`)
``<md>-router``                      router Deployment, ConfigMap, ServiceAccount, Role, Binding
===================================  ===========================================================

Labels: every object carries ``app.kubernetes.io/managed-by``, ``mlops.dev/deployment`` and
``mlops.dev/model``; model-server pods add ``mlops.dev/variant``, ``mlops.dev/version``,
``mlops.dev/role`` (``stable`` | ``canary``) and ``app.kubernetes.io/component: model-server``.

**Services select by role.** The Service ``<md>-<variant>`` selects only the variant's
``stable`` pods and ``<md>-<variant>-canary`` only its ``canary`` pods, so the router and
Gateway API weights between the two are exact (no pod is reachable through both). A
Deployment's selector never contains the version (selectors are immutable): a new version of
the stable Deployment is an ordinary rolling update.

Serving pods run ``mlops-runtime serve`` configured through its ``MLOPS_RUNTIME_*`` env vars
(model URI pinned to ``models:/<model>/<version>``, served name, variant label of the metrics,
HTTP port, gRPC port, always 8081) and bind the pod IP (``MLOPS_RUNTIME_HOST`` from
``status.podIP``; set it to ``0.0.0.0`` in ``spec.runtime.env`` if ``kubectl port-forward`` is
needed). Readiness is the gRPC health check, liveness ``/v2/health/live`` (see
:func:`container_spec`). The runtime labels its metrics
with ``model``, ``version`` (of the loaded model) and ``variant``; canary pods use the variant's
own name, so ``{variant="champion", version="4"}`` is the canary of ``champion`` at version 4.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ..api import ModelDeploymentSpec
from ..api.modeldeployment import GRPC_PORT, Variant
from .common import (
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_MODEL,
    LABEL_VARIANT,
    LABEL_VERSION,
    MANAGED_BY,
    MAX_NAME,
    OPERATOR,
    label_value,
    owner_reference,
    restricted_pod_security_context,
    restricted_security_context,
    truncate,
)

KIND = "ModelDeployment"
Role = Literal["stable", "canary"]
ROLES: tuple[Role, ...] = ("stable", "canary")
LABEL_ROLE = "mlops.dev/role"
COMPONENT_SERVER = "model-server"
COMPONENT_ROUTER = "router"
CANARY_SUFFIX = "-canary"
ROUTER_SUFFIX = "-router"
#: Container names (events and logs name them).
SERVER_CONTAINER = "server"
ROUTER_CONTAINER = "router"
#: Name of the HTTP port on containers and Services (the router config refers to it).
PORT_NAME = "http"
#: Name of the model server's gRPC port (Open Inference Protocol + grpc.health.v1) on its
#: containers and Services; the number is :data:`GRPC_PORT` (8081, KServe's and MLServer's).
GRPC_PORT_NAME = "grpc"
#: ``appProtocol`` of the Service port ``grpc``: cleartext HTTP/2 (Gateway API implementations
#: and meshes then speak HTTP/2 to the pods).
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"
SERVER_COMMAND = ("mlops-runtime", "serve")
ROUTER_COMMAND = ("mlops-runtime", "router")
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
ROUTER_READY_PATH = "/router/ready"  # the router proxies /v2/*; its own health is /router/*
ROUTER_LIVE_PATH = "/router/healthz"
METRICS_PATH = "/metrics"
ROUTER_CONFIG_KEY = "router.yaml"
#: Seconds a terminating pod keeps serving while it is removed from endpoints and the router.
PRESTOP_SLEEP_SECONDS = 5
#: preStop sleep + the runtime's graceful drain (30 s by default) + margin.
TERMINATION_GRACE_SECONDS = 45
#: Env vars of the model server the operator owns; ``spec.runtime.env`` cannot override them
#: (it can override ``MLOPS_RUNTIME_HOST`` and ``MLFLOW_TRACKING_URI``).
RESERVED_ENV = (
    "MLOPS_RUNTIME_MODEL_URI",
    "MLOPS_RUNTIME_MODEL_NAME",
    "MLOPS_RUNTIME_VARIANT",
    "MLOPS_RUNTIME_PORT",
    "MLOPS_RUNTIME_GRPC_PORT",  # the container port, Service port and probe are built for it
)
#: Metric of the custom/metrics API used for ``targetRequestsPerSecond`` (prometheus-adapter's
#: default rule turns the runtime's ``mlops_runtime_requests_total`` into ``..._per_second``).
RPS_METRIC = "mlops_runtime_requests_per_second"


# -- names -------------------------------------------------------------------------------------


def _dns_label(text: str) -> str:
    """``text`` as the start of a DNS-1035 label (Service names): lower case, no dots, a letter
    first."""
    out = re.sub(r"[^a-z0-9-]", "-", text.lower())
    return out if out[:1].isalpha() else f"x-{out}"


def _child(md_name: str, suffix: str) -> str:
    return truncate(_dns_label(md_name), MAX_NAME, suffix)


def variant_name(md_name: str, variant: str, role: Role = "stable") -> str:
    """``<md>-<variant>`` (stable) or ``<md>-<variant>-canary``: Deployment, Service and HPA."""
    check_role(role)
    return _child(md_name, f"-{variant}" + (CANARY_SUFFIX if role == "canary" else ""))


def router_name(md_name: str) -> str:
    """``<md>-router``: the router's Deployment, ConfigMap, ServiceAccount, Role, RoleBinding."""
    return _child(md_name, ROUTER_SUFFIX)


def entry_service_name(md_name: str) -> str:
    """``<md>``: the Service clients call in ``builtin`` and ``service`` modes."""
    return _child(md_name, "")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")


def find_variant(spec: ModelDeploymentSpec, variant: str) -> Variant:
    """The variant of ``spec`` called ``variant`` (``ValueError`` if there is none)."""
    for v in spec.variants:
        if v.name == variant:
            return v
    raise ValueError(f"no variant {variant!r} in spec.variants")


def pinned_model_uri(model: str, version: str | int) -> str:
    """``models:/<model>/<version>``: what every replica of a variant loads."""
    return f"models:/{model}/{version}"


# -- labels ------------------------------------------------------------------------------------


def md_labels(md_name: str, model: str) -> dict[str, str]:
    """Labels of every child of a ModelDeployment."""
    return {
        MANAGED_BY: OPERATOR,
        LABEL_DEPLOYMENT: label_value(md_name),
        LABEL_MODEL: label_value(model),
    }


def server_selector(md_name: str, variant: str, role: Role = "stable") -> dict[str, str]:
    """The (immutable) selector of one variant's pods in one role: Deployment and Service."""
    check_role(role)
    return {
        LABEL_DEPLOYMENT: label_value(md_name),
        LABEL_VARIANT: variant,
        LABEL_ROLE: role,
        LABEL_COMPONENT: COMPONENT_SERVER,
    }


def all_servers_selector(md_name: str) -> dict[str, str]:
    """Every model-server pod of the ModelDeployment, all variants and roles (not the router)."""
    return {LABEL_DEPLOYMENT: label_value(md_name), LABEL_COMPONENT: COMPONENT_SERVER}


def router_selector(md_name: str) -> dict[str, str]:
    """The router's pods."""
    return {LABEL_DEPLOYMENT: label_value(md_name), LABEL_COMPONENT: COMPONENT_ROUTER}


def server_labels(
    md_name: str, model: str, variant: str, version: str | int, role: Role = "stable"
) -> dict[str, str]:
    """Labels of a variant's Deployment and pods."""
    return {
        **md_labels(md_name, model),
        **server_selector(md_name, variant, role),
        LABEL_VERSION: label_value(str(version)),
    }


def child_metadata(
    name: str, namespace: str, uid: str, md_name: str, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(KIND, md_name, uid)],
    }


# -- pods --------------------------------------------------------------------------------------


def env_var(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def scrape_annotations(port: int) -> dict[str, str]:
    """``prometheus.io/*`` pod annotations: scrape ``/metrics`` on the HTTP port."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": METRICS_PATH,
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _grpc_probe(port: int, period: int, failures: int) -> dict[str, Any]:
    """Kubernetes' built-in gRPC probe: ``grpc.health.v1.Health/Check`` with service ``""``
    (the whole server; the runtime answers ``SERVING`` once the model is loaded). The port must
    be a number: ``GRPCAction`` takes no port names."""
    return {
        "grpc": {"port": port, "service": ""},  # written as the apiserver defaults it
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container_spec(
    name: str,
    image: str,
    command: tuple[str, ...],
    port: int,
    env: list[dict[str, Any]],
    ready_path: str,
    live_path: str,
    *,
    grpc_port: int | None = None,
) -> dict[str, Any]:
    """A container serving HTTP on ``port`` (probes on the port ``http``).

    With ``grpc_port`` (the model server) it also has the port ``grpc``, and readiness is the
    gRPC health check there while liveness stays HTTP: a pod is Ready only when its gRPC server
    answers ``SERVING`` (which, like ``/v2/health/ready``, means the model is loaded: both come
    from the same ``DataPlane.ready()``), and a pod whose HTTP server stops answering is
    restarted — each transport is probed by one of the two.
    """
    ports = [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    readiness = _probe(ready_path, period=2, failures=2)
    if grpc_port is not None:
        ports.append({"name": GRPC_PORT_NAME, "containerPort": grpc_port, "protocol": "TCP"})
        readiness = _grpc_probe(grpc_port, period=2, failures=2)
    return {
        "name": name,
        "image": image,
        "command": list(command),
        "ports": ports,
        "env": env,
        "readinessProbe": readiness,
        "livenessProbe": {**_probe(live_path, period=10, failures=3), "initialDelaySeconds": 5},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": restricted_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def pod_spec(container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "containers": [container],
        "securityContext": restricted_pod_security_context(),
        "enableServiceLinks": False,  # no FOO_PORT=tcp://... env that could shadow settings
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        **extra,
    }


def deployment_manifest(
    metadata: dict[str, Any],
    selector: dict[str, str],
    template_labels: dict[str, str],
    annotations: dict[str, str],
    pod_spec: dict[str, Any],
    replicas: int | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {
            # a new pod must be Ready before an old one goes: no failed requests in a roll
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": template_labels, "annotations": annotations},
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def server_env(
    spec: ModelDeploymentSpec, variant: str, version: str | int, tracking_uri: str
) -> list[dict[str, Any]]:
    """The model server's env: what ``mlops-runtime serve`` reads, then the user's own env."""
    env = [
        env_var("MLOPS_RUNTIME_MODEL_URI", pinned_model_uri(spec.model, version)),
        env_var("MLOPS_RUNTIME_MODEL_NAME", spec.model),
        env_var("MLOPS_RUNTIME_VARIANT", variant),
        env_var("MLOPS_RUNTIME_PORT", str(spec.runtime.port)),
        env_var("MLOPS_RUNTIME_GRPC_PORT", str(GRPC_PORT)),
        field_env("MLOPS_RUNTIME_HOST", "status.podIP"),
        env_var("MLFLOW_TRACKING_URI", tracking_uri),
    ]
    own = {e["name"] for e in env}
    for var in spec.runtime.env or []:
        if var.name in RESERVED_ENV:
            continue
        if var.name in own:  # the user's value wins (an in-cluster tracking URI, 0.0.0.0)
            env = [e for e in env if e["name"] != var.name]
        env.append(var.to_k8s())
    return env


def server_replicas(spec: ModelDeploymentSpec, variant: str, replicas: int | None) -> int | None:
    """``replicas`` of a variant's Deployment: ``None`` (omitted) when an HPA owns it, else the
    given count, else ``variants[].replicas``."""
    if spec.runtime.autoscaling is not None:
        return None
    return find_variant(spec, variant).replicas if replicas is None else replicas


# -- variant Deployment, Service, HPA -----------------------------------------------------------


def build_variant_deployment(
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    variant: str,
    version: str | int,
    *,
    tracking_uri: str,
    default_image: str,
    role: Role = "stable",
    replicas: int | None = None,
) -> dict[str, Any]:
    """The ``apps/v1`` Deployment serving ``variant`` at registry ``version`` in ``role``.

    ``replicas`` defaults to ``variants[].replicas`` (a canary may want fewer); with
    ``spec.runtime.autoscaling`` it is omitted so that the HPA owns it.
    """
    find_variant(spec, variant)
    runtime = spec.runtime
    labels = server_labels(md_name, spec.model, variant, version, role)
    container = container_spec(
        SERVER_CONTAINER,
        runtime.image or default_image,
        SERVER_COMMAND,
        runtime.port,
        server_env(spec, variant, version, tracking_uri),
        READY_PATH,
        LIVE_PATH,
        grpc_port=GRPC_PORT,
    )
    if runtime.env_from:
        container["envFrom"] = [e.to_k8s() for e in runtime.env_from]
    if runtime.resources is not None:
        container["resources"] = runtime.resources.to_k8s()
    metadata = child_metadata(variant_name(md_name, variant, role), namespace, uid, md_name, labels)
    metadata["annotations"] = {"mlops.dev/model-uri": pinned_model_uri(spec.model, version)}
    return deployment_manifest(
        metadata,
        server_selector(md_name, variant, role),
        labels,
        scrape_annotations(runtime.port),
        # model servers never talk to the Kubernetes API
        pod_spec(container, automountServiceAccountToken=False),
        server_replicas(spec, variant, replicas),
    )


def service_manifest(
    name: str,
    namespace: str,
    uid: str,
    md_name: str,
    labels: dict[str, str],
    selector: dict[str, str],
    port: int,
    *,
    grpc: bool = False,
) -> dict[str, Any]:
    """A ClusterIP Service with the port ``http``, and ``grpc`` (h2c) over model servers."""
    ports = [{"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}]
    if grpc:
        ports.append({"name": GRPC_PORT_NAME, "port": GRPC_PORT, "targetPort": GRPC_PORT_NAME,
                      "protocol": "TCP", "appProtocol": GRPC_APP_PROTOCOL})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(name, namespace, uid, md_name, labels),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    }


def build_variant_service(
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    variant: str,
    role: Role = "stable",
) -> dict[str, Any]:
    """The Service ``<md>-<variant>[-canary]`` over the variant's pods of one role only."""
    find_variant(spec, variant)
    selector = server_selector(md_name, variant, role)
    return service_manifest(
        variant_name(md_name, variant, role),
        namespace,
        uid,
        md_name,
        {**md_labels(md_name, spec.model), **selector},
        selector,
        spec.runtime.port,
        grpc=True,
    )


def pod_from_template(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A bare Pod of a Deployment's template (to dry-run it against Pod Security admission)."""
    template = deployment["spec"]["template"]
    meta = deployment["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or meta["name"],
            "namespace": meta.get("namespace"),
            "labels": dict(template["metadata"].get("labels") or {}),
            "annotations": dict(template["metadata"].get("annotations") or {}),
        },
        "spec": template["spec"],
    }
