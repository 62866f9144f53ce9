"""Pure traffic builders of a ModelDeployment: the split, and how each router mode applies it.

The split is computed once, by :func:`effective_weights`, as integer weights per
:class:`Backend` (a variant's ``stable`` or ``canary`` pods, each behind its own Service) that
sum to 100; each mode renders the same split:

- ``builtin``: :func:`build_router_configmap`, the config ``mlops-runtime router`` reads (one
  upstream per backend, sticky header, mirror). The router re-reads the ConfigMap every second,
  so a new split applies within seconds, without a restart.
- ``gateway-api``: :func:`build_http_route`, an ``HTTPRoute`` with weighted ``backendRefs``
  (and a ``RequestMirror`` filter), and, when gRPC has Gateways of its own, a ``GRPCRoute`` with
  the same split to the Services' ``grpc`` port. Sticky sessions are not in the standard channel.
- ``service``: :func:`build_service_mode_service`, one Service over every model-server pod.

What a mode cannot express is listed by :func:`traffic_limitations` (for a condition/Event).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal, NamedTuple

from ..api import ModelDeploymentSpec
from ..api.modeldeployment import GRPC_PORT
from .modeldeployment import (
    CANARY_SUFFIX,
    COMPONENT_SERVER,
    LABEL_COMPONENT,
    Role,
    all_servers_selector,
    check_role,
    child_metadata,
    entry_service_name,
    find_variant,
    md_labels,
    service_manifest,
    variant_name,
)

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
#: Annotation on a ModelDeployment naming the Gateway(s) of its HTTPRoute, parsed by
#: :func:`parse_parent_refs`, e.g. ``infra/public-gw:https`` or a JSON list of parentRefs.
PARENT_REFS_ANNOTATION = "mlops.dev/gateway-parent-refs"
#: The same for its GRPCRoute (no annotation and no setting: no GRPCRoute). A listener of its
#: own: the Gateway API lets an HTTPRoute and a GRPCRoute share a listener only when their
#: hostnames do not overlap.
GRPC_PARENT_REFS_ANNOTATION = "mlops.dev/gateway-grpc-parent-refs"


class Backend(NamedTuple):
    """One set of pods that gets a share of the traffic: a variant's stable or canary pods."""

    variant: str
    role: Role = "stable"

    @property
    def upstream(self) -> str:
        """Its name in the router config, the status and the metrics: ``champion``,
        ``champion-canary``."""
        return self.variant + (CANARY_SUFFIX if self.role == "canary" else "")


def spec_weights(spec: ModelDeploymentSpec) -> dict[str, int]:
    """Variant name → weight, in the spec's order."""
    return {v.name: v.weight for v in spec.variants}


def _largest_remainder(weights: Mapping[str, int], total: int) -> dict[str, int]:
    """``weights`` scaled to integers summing to ``total`` (largest remainder, ties by order)."""
    whole = sum(weights.values())
    parts = {k: divmod(w * total, whole) for k, w in weights.items()}  # exact integers
    out = {k: q for k, (q, _) in parts.items()}
    names = list(weights)
    order = sorted(names, key=lambda k: (-parts[k][1], names.index(k)))
    for k in order[: total - sum(out.values())]:
        out[k] += 1
    return out


def effective_weights(
    variants: Mapping[str, int],
    canary: tuple[str, int] | None = None,
    total: int = 100,
) -> dict[Backend, int]:
    """The traffic split: integer weights per backend, non-negative, summing to ``total``.

    ``variants`` maps each variant to its weight (``variants[].weight``; they are scaled to
    ``total`` if they do not already sum to it). Without a canary each variant's stable pods
    get its weight. With ``canary = (variant, step_weight)`` the canary takes ``step_weight``
    percent **of that variant's share** (as Argo Rollouts' ``setWeight`` does for a single
    service: with one variant it is the share of all traffic), the variant's stable pods keep
    the rest, and every other variant keeps its weight exactly. The canary's share is
    ``variant_weight * step_weight / 100`` rounded half up, except that a positive step never
    rounds to 0 (the canary must see traffic to be analysed) and a step below 100 leaves the
    stable pods at least 1 when the variant has 2 or more. With ``total=10000`` (basis points)
    the canary's share is always exact.
    """
    if total <= 0:
        raise ValueError("total must be positive")
    if not variants or any(w < 0 for w in variants.values()) or sum(variants.values()) <= 0:
        raise ValueError("variant weights must be non-negative with a positive sum")
    scaled = _largest_remainder(variants, total)
    out = {Backend(name): weight for name, weight in scaled.items()}
    if canary is None:
        return out
    name, step = canary
    if name not in variants:
        raise ValueError(f"canary of unknown variant {name!r}")
    if not 0 <= step <= 100:
        raise ValueError("canary weight must be between 0 and 100")
    share = scaled[name]
    part = (share * step * 2 + 100) // 200  # round half up of share * step / 100
    if step > 0 and share > 0:
        part = max(part, 1)
    if step < 100 and share >= 2:
        part = min(part, share - 1)
    result: dict[Backend, int] = {}  # the spec's order, each canary right after its stable
    for backend, weight in out.items():
        if backend.variant == name:
            result[backend] = share - part
            result[Backend(name, "canary")] = part
        else:
            result[backend] = weight
    return result


def traffic_summary(weights: Mapping[Backend, int]) -> str:
    """The TRAFFIC column: ``champion=81 champion-canary=9 challenger=10``."""
    return " ".join(f"{b.upstream}={w}" for b, w in weights.items())


def backend_service(md_name: str, backend: Backend) -> str:
    check_role(backend.role)
    return variant_name(md_name, backend.variant, backend.role)


# -- gateway-api: the HTTPRoute ----------------------------------------------------------------


def parse_parent_refs(text: str) -> list[dict[str, Any]]:
    """Gateway parentRefs from an annotation or setting.

    Either a JSON list of parentRef objects, or comma-separated ``[namespace/]name[:section]``,
    e.g. ``infra/public-gw:https, internal-gw``. ``ValueError`` on anything else.
    """
    text = text.strip()
    if not text:
        raise ValueError("no Gateway given for the HTTPRoute")
    if text.startswith("["):
        refs = json.loads(text)
        if not isinstance(refs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"] for r in refs
        ):
            raise ValueError("parentRefs must be a JSON list of objects with a name")
        return refs
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ns, _, rest = item.rpartition("/")
        name, _, section = rest.partition(":")
        if not name or "/" in ns or ":" in section:
            raise ValueError(f"bad Gateway reference {item!r}: use [namespace/]name[:section]")
        ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
        ref["name"] = name
        if ns:
            ref["namespace"] = ns
        if section:
            ref["sectionName"] = section
        out.append(ref)
    if not out:
        raise ValueError("no Gateway given for the HTTPRoute")
    return out


def _weighted_rule(md_name: str, spec: ModelDeploymentSpec, weights: Mapping[Backend, int],
                   port: int) -> dict[str, Any]:
    """A route rule sending every request to the backends' Services on ``port``, weighted.

    Backends with weight 0 stay listed (they get no traffic; the route shows the whole split).
    ``traffic.mirror`` becomes a ``RequestMirror`` filter to the variant's stable Service, with
    ``percent`` when below 100.
    """
    rule: dict[str, Any] = {"backendRefs": [
        {"group": "", "kind": "Service", "name": backend_service(md_name, b), "port": port,
         "weight": w}
        for b, w in weights.items()
    ]}
    mirror = spec.traffic.mirror
    if mirror is not None and mirror.percent > 0:
        find_variant(spec, mirror.variant)
        request_mirror: dict[str, Any] = {"backendRef": {
            "group": "", "kind": "Service", "name": variant_name(md_name, mirror.variant),
            "port": port}}
        if mirror.percent < 100:
            request_mirror["percent"] = mirror.percent
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": request_mirror}]
    return rule


def build_route(
    kind: Literal["HTTPRoute", "GRPCRoute"],
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    weights: Mapping[Backend, int],
    parent_refs: Sequence[Mapping[str, Any]],
    hostnames: Sequence[str] = (),
) -> dict[str, Any]:
    """The route ``<md>`` of ``kind`` with the split of :func:`_weighted_rule`: an
    ``HTTPRoute`` sends every request (path prefix ``/``) to the backends' Services on the HTTP
    port; a ``GRPCRoute`` every call to their ``grpc`` port."""
    if kind == "HTTPRoute":
        rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                **_weighted_rule(md_name, spec, weights, spec.runtime.port)}
    else:
        rule = _weighted_rule(md_name, spec, weights, GRPC_PORT)
    route_spec: dict[str, Any] = {"parentRefs": [dict(r) for r in parent_refs], "rules": [rule]}
    if hostnames:
        route_spec["hostnames"] = list(hostnames)
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": kind,
        "metadata": child_metadata(
            entry_service_name(md_name), namespace, uid, md_name, md_labels(md_name, spec.model)
        ),
        "spec": route_spec,
    }


build_http_route = partial(build_route, "HTTPRoute")
build_grpc_route = partial(build_route, "GRPCRoute")


# -- service: one Service over every variant ---------------------------------------------------


def build_service_mode_service(
    md_name: str, namespace: str, uid: str, spec: ModelDeploymentSpec
) -> dict[str, Any]:
    """The entry Service ``<md>`` over every model-server pod of every variant and role.

    The weights are **not** applied: kube-proxy spreads connections evenly over ready pods, so
    each variant (and a canary) gets roughly its share of the *replicas* — e.g. 2 champion pods
    and 1 challenger pod give about 67/33 whatever ``weight`` says. Use ``builtin`` or
    ``gateway-api`` for exact weights, sticky sessions or mirroring.
    """
    return service_manifest(
        entry_service_name(md_name),
        namespace,
        uid,
        md_name,
        {**md_labels(md_name, spec.model), LABEL_COMPONENT: COMPONENT_SERVER},
        all_servers_selector(md_name),
        spec.runtime.port,
        grpc=True,  # gRPC clients reach every variant here (the router proxies HTTP only)
    )


def replica_split(replicas: Mapping[Backend, int]) -> dict[Backend, int]:
    """The approximate ``service``-mode split: each backend's share of the replicas, summing to
    100 (all zero when there are no replicas)."""
    if sum(replicas.values()) <= 0:
        return dict.fromkeys(replicas, 0)
    scaled = _largest_remainder({b.upstream: n for b, n in replicas.items()}, 100)
    return {b: scaled[b.upstream] for b in replicas}


# -- status.url --------------------------------------------------------------------------------


def service_url(name: str, namespace: str, port: int) -> str:
    """``http://<name>.<namespace>.svc:<port>``."""
    return f"http://{name}.{namespace}.svc:{port}"


def status_url(
    md_name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    gateway_address: str | None = None,
) -> str | None:
    """The in-cluster inference URL: the entry Service ``<md>`` (``builtin``: the router,
    ``service``: all servers); for ``gateway-api`` ``http://<gateway_address>`` (from the
    Gateway's ``status.addresses``), or ``None`` while it is unknown."""
    if spec.traffic.router == "gateway-api":
        return f"http://{gateway_address}" if gateway_address else None
    return service_url(entry_service_name(md_name), namespace, spec.runtime.port)


def traffic_limitations(spec: ModelDeploymentSpec) -> list[str]:
    """What ``spec.traffic`` asks that its router cannot do, one sentence each (empty: none)."""
    mode = spec.traffic.router
    mirror = spec.traffic.mirror
    out = []
    if mode == "builtin" and mirror is not None and 0 < mirror.percent < 100:
        out.append(
            f"the builtin router mirrors every request; mirror.percent={mirror.percent} "
            "is not supported"
        )
    if mode == "gateway-api" and spec.traffic.sticky_header:
        out.append("gateway-api routes have no sticky sessions; stickyHeader is ignored")
    if mode == "service":
        out.append("the service router splits by replica count; variant weights are ignored")
        if spec.traffic.sticky_header:
            out.append("the service router has no sticky sessions; stickyHeader is ignored")
        if mirror is not None and mirror.percent > 0:
            out.append("the service router cannot mirror; traffic.mirror is ignored")
    return out
