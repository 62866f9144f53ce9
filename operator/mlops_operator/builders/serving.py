"""The whole set of a ModelDeployment's children for one state of its rollout. Pure.

The controller decides what is served (stable versions per variant, an optional canary with its
weight); this module turns that into every manifest the traffic mode needs, by calling the
builders of :mod:`.modeldeployment` and :mod:`.traffic`. Children not in the set are deleted by
the controller (a finished canary, a removed variant, the router after a mode change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..api import ModelDeploymentSpec
from .autoscaling import build_hpa
from .modeldeployment import (
    build_variant_deployment,
    build_variant_service,
)
from .router import (
    build_router_configmap,
    build_router_deployment,
    build_router_rbac,
    build_router_service,
)
from .traffic import (
    Backend,
    build_grpc_route,
    build_http_route,
    build_service_mode_service,
    effective_weights,
    spec_weights,
)

#: Kinds of children the controller prunes: (apiVersion, kind).
PRUNED_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("v1", "ConfigMap"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)


def weights(spec: ModelDeploymentSpec,
            canary: tuple[str, str, int] | None) -> dict[Backend, int]:
    """The split between the variants' stable pods and a canary (its step weight applies to its
    variant's share)."""
    return effective_weights(spec_weights(spec),
                             canary=(canary[0], canary[2]) if canary else None)


def build_children(
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    stable: Mapping[str, str],
    canary: tuple[str, str, int] | None,
    *,
    tracking_uri: str,
    default_image: str,
    parent_refs: Sequence[Mapping[str, Any]] = (),
    grpc_parent_refs: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every child for serving ``stable`` (variant → version) plus ``canary`` (variant, version,
    weight). Variants without a resolved version yet get no pods. In ``gateway-api`` mode, a
    GRPCRoute too when ``grpc_parent_refs`` names its Gateways."""
    out: list[dict[str, Any]] = []
    common = {"tracking_uri": tracking_uri, "default_image": default_image}
    for variant in spec.variants:
        version = stable.get(variant.name)
        if version is None:
            continue
        out.append(build_variant_deployment(md_name, namespace, uid, spec, variant.name,
                                            version, **common))
        out.append(build_variant_service(md_name, namespace, uid, spec, variant.name))
        hpa = build_hpa(md_name, namespace, uid, spec, variant.name)
        if hpa is not None:
            out.append(hpa)
    if canary is not None:
        name, version, _ = canary
        out.append(build_variant_deployment(md_name, namespace, uid, spec, name, version,
                                            role="canary", **common))
        out.append(build_variant_service(md_name, namespace, uid, spec, name, role="canary"))
        hpa = build_hpa(md_name, namespace, uid, spec, name, role="canary")
        if hpa is not None:
            out.append(hpa)
    split = weights(spec, canary)
    mode = spec.traffic.router
    if mode == "builtin":
        out += build_router_rbac(md_name, namespace, uid, spec)
        out.append(build_router_configmap(md_name, namespace, uid, spec, split))
        out.append(build_router_deployment(md_name, namespace, uid, spec,
                                           default_image=default_image))
        out.append(build_router_service(md_name, namespace, uid, spec))
    elif mode == "gateway-api":
        out.append(build_http_route(md_name, namespace, uid, spec, split, parent_refs))
        if grpc_parent_refs:
            out.append(build_grpc_route(md_name, namespace, uid, spec, split, grpc_parent_refs))
    else:
        out.append(build_service_mode_service(md_name, namespace, uid, spec))
    return out
