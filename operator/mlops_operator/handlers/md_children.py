"""A ModelDeployment's children: read from the controller's child watch, applied only when
something changed, pruned when no longer wanted, and refusals kept for the status.

* **Read.** :func:`deployments` takes the variants' Deployments from the watch when it holds
  every one expected, else lists them; :func:`slim` is what the watch keeps of a child.
* **Apply.** :func:`apply_children` builds every child (:func:`mlops_operator.builders.serving.
  build_children`) and server-side applies those whose manifest changed or that someone changed
  since this process applied them (:func:`_unchanged`); a child the API server refuses is
  returned as a problem, the others are still applied; then it prunes the children no longer
  built.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

from .. import kube
from ..api import ModelDeploymentSpec
from ..builders.common import LABEL_DEPLOYMENT, MANAGED_BY, OPERATOR, label_value
from ..builders.modeldeployment import variant_name
from ..builders.serving import PRUNED_KINDS, build_children
from ..builders.traffic import (
    GRPC_PARENT_REFS_ANNOTATION,
    PARENT_REFS_ANNOTATION,
    parse_parent_refs,
)
from ..controller import Pass


def owned(p: Pass, api_version: str, kind: str) -> list[dict[str, Any]]:
    selector = f"{MANAGED_BY}={OPERATOR},{LABEL_DEPLOYMENT}={label_value(p.name)}"
    try:
        items = kube.list_(api_version, kind, p.namespace, selector)
    except Exception as exc:
        if type(exc).__name__ == "ResourceNotFoundError":  # e.g. no Gateway API CRDs
            return []
        raise
    return [i for i in items if kube.owned_by(i, p.uid)]


def deployments(p: Pass, stable: dict[str, str | None],
                 ro: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The variants' Deployments by name, from the child watch when it holds every one the
    status says should exist (no request), else listed (the watch not synced yet after a
    start, or one deleted: the pass must not take a Deployment it has not seen for gone)."""
    expected = [variant_name(p.name, n) for n, v in stable.items() if v]
    if ro and ro.get("variant") and ro.get("version"):
        expected.append(variant_name(p.name, ro["variant"], "canary"))
    if p.controller is not None:
        seen = {n: p.controller.children_seen.get(("Deployment", p.namespace, n))
                for n in expected}
        if all(d is not None and kube.owned_by(d, p.uid) for d in seen.values()):
            return seen  # type: ignore[return-value]
    return {d["metadata"]["name"]: d for d in owned(p, "apps/v1", "Deployment")}


def slim(body: dict[str, Any]) -> dict[str, Any]:
    """What passes read of a child in the watch cache: who it is and its version (a child
    unchanged since its apply is not applied again); a Deployment's replicas and status too
    (:func:`deployments`). 1,000 ModelDeployments have ~10,000 children."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                           "generation", "labels", "ownerReferences")
                     if k in meta}}
    if body.get("kind") == "Deployment":
        kept["metadata"]["annotations"] = meta.get("annotations")  # in its _fingerprint
        replicas = (body.get("spec") or {}).get("replicas")
        kept["spec"] = {} if replicas is None else {"replicas": replicas}
        kept["status"] = body.get("status") or {}
    return kept


_applied: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}
#: per ModelDeployment: child ``(kind, namespace, name)`` -> (digest of the manifest this process
#: last applied, the resourceVersion the apply returned, its :func:`_fingerprint`)
_last_apply: dict[tuple[str, str], dict[tuple[str, str, str], tuple[str, str, str | None]]] = {}


#: The Deployment controller's own annotations (``deployment.kubernetes.io/revision``)
KCM_ANNOTATIONS = "deployment.kubernetes.io/"


def _fingerprint(obj: dict[str, Any]) -> str | None:
    """What changes when anyone changes an object with a ``generation`` (a Deployment) other
    than by its status: the generation (every spec change), labels, annotations, owners. None
    for kinds without one: any new resourceVersion counts for them."""
    meta = obj.get("metadata") or {}
    if not meta.get("generation"):
        return None
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not k.startswith(KCM_ANNOTATIONS)}  # the revision, set on each rollout
    return json.dumps([meta.get("uid"), meta["generation"], meta.get("labels"), annotations,
                       meta.get("ownerReferences")], sort_keys=True)


def _digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()  # fmt: skip


def _unchanged(p: Pass, key: tuple[str, str, str], digest: str,
               last: tuple[str, str, str | None] | None) -> bool:  # fmt: skip
    """Whether the child is as this process last applied it: same manifest, and its watch shows
    the very version that apply returned, or — a Deployment — only its status has moved since
    (same :func:`_fingerprint`; the Deployment controller writes its status on every pod that
    starts). Otherwise (edited, deleted) it is applied again. Only the kinds in
    ``CONTROLLER.children`` are watched; the others (HPAs, routes: optional kinds) are never
    seen here, so they are applied on every pass."""
    if last is None or last[0] != digest or p.controller is None:
        return False
    seen = p.controller.children_seen.get(key)
    if seen is None:
        return False
    return ((seen.get("metadata") or {}).get("resourceVersion") == last[1]
            or (last[2] is not None and _fingerprint(seen) == last[2]))


def _parent_refs(p: Pass, annotation: str, default: str) -> list[dict[str, Any]]:
    """The Gateways an annotation (else the operator's setting) names; one that cannot be
    parsed is ``Ready=False/InvalidParentRefs`` and a Warning Event, until it changes."""
    text = (p.meta.get("annotations") or {}).get(annotation) or default
    try:
        return parse_parent_refs(text) if text else []
    except ValueError as exc:
        message = f"{annotation}: {exc}"
        if p.status.cond("Ready", False, "InvalidParentRefs", message):
            kopf.warn(p.body, reason="InvalidParentRefs", message=message[:1024])
        p.status.set(phase="Failed", message=message[:1024])
        p.status.observed()
        raise kopf.PermanentError(message) from exc


def _refused(exc: BaseException) -> bool:
    """The API server answered an apply with a refusal that names its reason: bad input (400,
    404, 409, 422), admission or a quota (403 that is not RBAC: RBAC raised
    :class:`kube.Forbidden` already) or its own failure to admit it (500, e.g. "failed to
    allocate a serviceIP: range is full"; a failing webhook). It is reported on the
    ModelDeployment. An apiserver that is away, overloaded or restarting (no answer,
    429/502/503/504) is not: the pass retries with the controller's backoff."""
    return kube.is_status(exc, 400, 403, 404, 409, 422, 500)


def apply_children(p: Pass, spec: ModelDeploymentSpec, stable: dict[str, str],
                   canary: tuple[str, str, int] | None) -> dict[str, str]:
    """Apply the children that need it and prune those no longer wanted; the refused ones
    (``apply/<kind>/<name>`` → the API server's message) are left for the status to report,
    while the others are still applied."""
    cfg = p.settings
    children = build_children(p.name, p.namespace, p.uid, spec, stable, canary,
                              tracking_uri=cfg.pod_tracking_uri, default_image=cfg.runtime_image,
                              parent_refs=_parent_refs(p, PARENT_REFS_ANNOTATION,
                                                       cfg.gateway_parent_refs),
                              grpc_parent_refs=_parent_refs(p, GRPC_PARENT_REFS_ANNOTATION,
                                                            cfg.gateway_grpc_parent_refs))
    key = (p.namespace, p.name)
    last_apply = _last_apply.setdefault(key, {})
    refused: dict[str, str] = {}
    for child in children:
        kind, name = child["kind"], child["metadata"]["name"]
        child_key = (kind, p.namespace, name)
        digest = _digest(child)
        if _unchanged(p, child_key, digest, last_apply.get(child_key)):
            continue  # a no-op apply saved (each costs the apiserver a full apply)
        try:
            applied = kube.apply(child)
        except Exception as exc:
            last_apply.pop(child_key, None)
            if type(exc).__name__ == "ResourceNotFoundError":  # a kind of an optional CRD
                why = (f"the API server does not serve {child['apiVersion']} {kind} (are its "
                       "CRDs installed?)")
            elif isinstance(exc, kube.Forbidden) or not _refused(exc):
                raise
            else:
                why = kube.error_message(exc)
            refused[f"apply/{kind}/{name}"] = f"{kind} {name}: {why}"
            p.logger.warning("%s %s refused: %s", kind, name, why)
            continue
        version = (applied.get("metadata") or {}).get("resourceVersion")
        if version:
            last_apply[child_key] = (digest, str(version), _fingerprint(applied))
    names = frozenset((c["kind"], c["metadata"]["name"]) for c in children)
    for gone in [k for k in last_apply if (k[0], k[2]) not in names]:
        del last_apply[gone]
    if _applied.get(key) == names:
        return refused
    for api_version, kind in PRUNED_KINDS:
        for obj in owned(p, api_version, kind):
            if (kind, obj["metadata"]["name"]) not in names:
                kube.delete(api_version, kind, p.namespace, obj["metadata"]["name"])
                p.logger.info("deleted %s %s", kind, obj["metadata"]["name"])
    _applied[key] = names
    return refused


def forget(key: tuple[str, str]) -> None:
    """Drop what this process remembers of a deleted ModelDeployment's children."""
    _applied.pop(key, None)
    _last_apply.pop(key, None)
