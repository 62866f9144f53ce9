"""Pure builders of the builtin router (``traffic.router: builtin``): its Deployment, entry
Service, RBAC, and the ConfigMap it re-reads every second (weights, sticky header, mirror)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..api import ModelDeploymentSpec
from .common import LABEL_COMPONENT
from .modeldeployment import (
    COMPONENT_ROUTER,
    PORT_NAME,
    ROUTER_COMMAND,
    ROUTER_CONFIG_KEY,
    ROUTER_CONTAINER,
    ROUTER_LIVE_PATH,
    ROUTER_READY_PATH,
    child_metadata,
    container_spec,
    deployment_manifest,
    entry_service_name,
    env_var,
    field_env,
    find_variant,
    md_labels,
    pod_spec,
    router_name,
    router_selector,
    scrape_annotations,
    service_manifest,
    variant_name,
)
from .traffic import Backend, backend_service

# -- router (traffic.router: builtin) ----------------------------------------------------------


def router_labels(md_name: str, model: str) -> dict[str, str]:
    """Labels of the router's objects and pods."""
    return {**md_labels(md_name, model), LABEL_COMPONENT: COMPONENT_ROUTER}


def router_env(md_name: str, namespace: str, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """What ``mlops-runtime router`` reads: its ConfigMap (re-read every second through the
    API, so a new split applies within seconds and without a restart), namespace, address."""
    return [
        env_var("MLOPS_ROUTER_CONFIGMAP", f"{namespace}/{router_name(md_name)}"),
        env_var("MLOPS_ROUTER_CONFIGMAP_KEY", ROUTER_CONFIG_KEY),
        field_env("MLOPS_ROUTER_NAMESPACE", "metadata.namespace"),
        field_env("MLOPS_ROUTER_HOST", "status.podIP"),
        env_var("MLOPS_ROUTER_PORT", str(spec.runtime.port)),
    ]


def build_router_deployment(
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    *,
    default_image: str,
    replicas: int = 1,
) -> dict[str, Any]:
    """The router Deployment ``<md>-router`` (same image, security and rollout as the servers).

    It runs as the ServiceAccount of :func:`build_router_rbac`, which may read its ConfigMap and
    discover the variant Services' endpoints.
    """
    labels = router_labels(md_name, spec.model)
    name = router_name(md_name)
    container = container_spec(
        ROUTER_CONTAINER,
        spec.runtime.image or default_image,
        ROUTER_COMMAND,
        spec.runtime.port,
        router_env(md_name, namespace, spec),
        ROUTER_READY_PATH,
        ROUTER_LIVE_PATH,
    )
    return deployment_manifest(
        child_metadata(name, namespace, uid, md_name, labels),
        router_selector(md_name),
        labels,
        scrape_annotations(spec.runtime.port),
        pod_spec(container, serviceAccountName=name),
        replicas,
    )


def build_router_service(
    md_name: str, namespace: str, uid: str, spec: ModelDeploymentSpec
) -> dict[str, Any]:
    """The entry Service ``<md>`` over the router's pods (``builtin`` mode)."""
    return service_manifest(
        entry_service_name(md_name),
        namespace,
        uid,
        md_name,
        router_labels(md_name, spec.model),
        router_selector(md_name),
        spec.runtime.port,
    )


def build_router_rbac(
    md_name: str, namespace: str, uid: str, spec: ModelDeploymentSpec
) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding ``<md>-router``: read the router's ConfigMap, list
    EndpointSlices, and read Services and Pods (its fallback when slices are empty).

    The operator can only grant what it holds itself (RBAC escalation check), so its own role
    needs these verbs and ``roles``/``rolebindings`` create/patch.
    """
    name = router_name(md_name)
    labels = router_labels(md_name, spec.model)

    def meta() -> dict[str, Any]:
        return child_metadata(name, namespace, uid, md_name, dict(labels))

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [name],
                    "verbs": ["get"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list"],
                },
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


# -- builtin: the router's ConfigMap -----------------------------------------------------------


def router_config(
    md_name: str, namespace: str, spec: ModelDeploymentSpec, weights: Mapping[Backend, int]
) -> dict[str, Any]:
    """The router config document (``mlops_runtime.router.config.RouterConfig``).

    One upstream per backend, discovered through its Service's port ``http``; the mirror gets
    every request (the router has no mirror percentage; see :func:`traffic_limitations`).
    """
    doc: dict[str, Any] = {"namespace": namespace}
    if spec.traffic.sticky_header:
        doc["stickyHeader"] = spec.traffic.sticky_header
    doc["variants"] = [
        {
            "name": b.upstream,
            "weight": w,
            "service": backend_service(md_name, b),
            "port": PORT_NAME,
        }
        for b, w in weights.items()
    ]
    mirror = spec.traffic.mirror
    if mirror is not None and mirror.percent > 0:
        find_variant(spec, mirror.variant)
        doc["mirror"] = {
            "name": mirror.variant,  # same name and Service as its upstream: one target set
            "service": variant_name(md_name, mirror.variant),
            "port": PORT_NAME,
        }
    return doc


def build_router_configmap(
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    weights: Mapping[Backend, int],
) -> dict[str, Any]:
    """The ConfigMap ``<md>-router`` holding :func:`router_config` under ``router.yaml``."""
    text = yaml.safe_dump(router_config(md_name, namespace, spec, weights), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(
            router_name(md_name), namespace, uid, md_name, router_labels(md_name, spec.model)
        ),
        "data": {ROUTER_CONFIG_KEY: text},
    }
