"""ModelDeployment controller: pinned versions served as Deployments, traffic, rollouts.

The shape of every controller (docs/architecture.md). One pass:

1. **Resolve** each variant's ``modelUri`` to a pinned registry version (aliases from the
   per-model :mod:`mlops_operator.aliases` cache, which also wakes this object when an alias
   moves). An unresolvable variant is reported (condition + Warning Event naming the variant)
   and keeps what it serves.
2. **Observe** the Deployments it owns (their events wake it) and, while a canary is in a pause,
   run the analysis queries against Prometheus when they are due.
3. **Decide** the next rollout state with the pure :func:`mlops_operator.rollout.decide`.
4. **Build and apply** every child (:func:`mlops_operator.builders.serving.build_children`,
   server-side apply) whose manifest changed or that changed since this process applied it
   (its watch says so), and delete the children no longer wanted.
5. **Status**: variants (pinned version, weight, ready), the printer columns, ``rollout``, the
   phase (Pending → Progressing → Ready / Degraded / Failed) and conditions, Events on every
   transition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, VERSION, kube
from .. import analysis as an
from ..alerts import deployment_selector, last_retrain
from ..aliases import WATCH
from ..api import ModelDeploymentSpec
from ..builders.common import (
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_VARIANT,
    MANAGED_BY,
    OPERATOR,
    label_value,
)
from ..builders.jobs import pending_reason
from ..builders.modeldeployment import COMPONENT_SERVER, variant_name
from ..builders.serving import PRUNED_KINDS, build_children, weights
from ..builders.traffic import (
    GRPC_PARENT_REFS_ANNOTATION,
    PARENT_REFS_ANNOTATION,
    parse_parent_refs,
    status_url,
)
from ..builders.traffic import traffic_summary as summary_of
from ..controller import Pass, controller
from ..metrics import observe_stage
from ..mlflow_utils import make_client, mlflow_errors
from ..registry import SourceNotFound, get_version, set_tags
from ..rollout import ab_analysis_due, analysis_due, decide, next_wakeup, parse_ts, ts

PLURAL = "modeldeployments"
TAG_ROLLOUT_ABORTED = "mlops.dev/rollout-aborted"
REJECTED = "Prometheus rejected the query"
#: pinned (model, version) pairs known to exist: checked once, not on every pass
_known: set[tuple[str, str]] = set()


def _follower(p: Pass) -> str:
    return f"ModelDeployment/{p.key}"


def reconcile(p: Pass) -> None:
    st = p.status
    if p.meta.get("deletionTimestamp"):
        return
    try:
        spec = ModelDeploymentSpec.model_validate(p.spec)
    except ValidationError as exc:
        message = f"invalid spec: {exc}"
        if st.cond("Ready", False, "InvalidSpec", message):
            kopf.warn(p.body, reason="InvalidSpec", message=message[:1024])
        st.set(phase="Failed", message=message[:1024])
        st.observed()
        raise kopf.PermanentError(message) from exc
    now = dt.datetime.now(dt.UTC)
    desired, problems = resolve(p, spec)
    stable = {v["name"]: v.get("version") for v in st.get("variants") or []}
    ro = st.get("rollout")
    deployments = _deployments(p, stable, ro)
    canary_ready = False
    if ro and ro.get("variant") and ro.get("version"):
        canary = deployments.get(variant_name(p.name, ro["variant"], "canary"))
        canary_ready = canary is not None and _rolled_out(canary, ro["version"])
    stable_ready = {n: _rolled_out(deployments.get(variant_name(p.name, n)), v)
                    for n, v in stable.items() if v}
    measurements = None
    if analysis_due(spec, ro, now) and canary_ready:
        measurements = measure(p, spec, ro["variant"], str(ro["version"]))
    decision = decide(spec, stable, desired, ro, canary_ready=canary_ready,
                      stable_ready=stable_ready, measurements=measurements, now=now)
    if ab_analysis_due(spec, decision.rollout, now):
        decision.rollout = analyse_variants(p, spec, decision.stable, now)
    for m in (decision.rollout or {}).get("measurements") or []:
        if str(m.get("message", "")).startswith(REJECTED):  # until the query is fixed
            problems[f"analysis/{m['metric']}"] = f"analysis metric {m['metric']}: {m['message']}"
    for type_, reason, message in decision.events:
        (kopf.warn if type_ == "Warning" else kopf.info)(p.body, reason=reason, message=message)
    if decision.aborted:
        record_abort(p, spec, *decision.aborted)
    if ro and not decision.rollout and ro.get("state") == "Promoting":
        started = parse_ts(ro.get("stepStarted"))
        observe_stage("deployment", "success", (now - started).total_seconds() if started else 0)
    problems.update(apply_children(p, spec, decision.stable, decision.canary))
    phase = write_status(p, spec, decision, deployments, problems)
    wake = next_wakeup(spec, decision.rollout, now)
    if wake is not None:
        p.requeue(wake)
    if problems or phase != "Ready":  # pods waiting (a crash loop changes no Deployment)
        p.requeue(p.settings.resync_seconds)


def resolve(p: Pass, spec: ModelDeploymentSpec) -> tuple[dict[str, str | None], dict[str, str]]:
    """Each variant's pinned version (None when unresolvable) and the problems, by variant."""
    desired: dict[str, str | None] = {}
    problems: dict[str, str] = {}
    key = (p.namespace, p.name)
    cfg = p.settings
    client = make_client(cfg.mlflow_tracking_uri, cfg.mlflow_request_timeout)
    follows = False
    with mlflow_errors(f"resolving the variants of {p.key}"):
        for v in spec.variants:
            uri = v.model_uri
            desired[v.name] = None
            if not uri.startswith("models:/"):
                problems[v.name] = (f"variant {v.name}: {uri} is not served yet; register it and "
                                    f"use models:/{spec.model}/<version>")
                continue
            rest = uri[len("models:/"):]
            if "@" in rest:
                model, alias = rest.split("@", 1)
                follows = True
                WATCH.follow(model, _follower(p), lambda: CONTROLLER.enqueue(key))
                version = WATCH.aliases(client, model, cfg.resync_seconds).get(alias)
                if version is None:
                    problems[v.name] = (f"variant {v.name}: alias {alias} of model {model} "
                                        "points to no version yet")
                    continue
            else:
                model, _, version = rest.partition("/")
                if (model, version) not in _known:
                    try:
                        get_version(client, model, version)
                    except SourceNotFound:
                        problems[v.name] = (f"variant {v.name}: model {model} has no registered "
                                            f"version {version}")
                        continue
                    _known.add((model, version))
            desired[v.name] = str(version)
    if not follows:
        WATCH.unfollow(_follower(p))
    return desired, problems


def measure(p: Pass, spec: ModelDeploymentSpec, variant: str,
            version: str) -> list[dict[str, Any]]:
    """One analysis round for the canary of ``variant`` at ``version``."""
    analysis = spec.rollout.analysis
    assert analysis is not None
    address = analysis.prometheus.address or p.settings.prometheus_url
    values = {"namespace": p.namespace, "deployment": p.name, "variant": variant,
              "version": version}
    out: list[dict[str, Any]] = []
    for metric in analysis.metrics:
        try:
            m = an.measure(address, metric, values)
        except an.QueryError as exc:
            out.append({"metric": metric.name, "verdict": "Inconclusive",
                        "query": an.render(metric.query, values),
                        "message": f"{REJECTED}: {exc}"})
            continue
        entry = {"metric": metric.name, "verdict": m.verdict, "query": m.query,
                 "message": m.message}
        if m.value is not None:
            entry["value"] = m.value
        out.append(entry)
    return out


def analyse_variants(p: Pass, spec: ModelDeploymentSpec, stable: dict[str, str],
                     now: dt.datetime) -> dict[str, Any]:
    """Strategy AB: one analysis round per variant, reported in ``status.rollout``."""
    rounds = []
    for v in spec.variants:
        if stable.get(v.name):
            rounds += [{**m, "variant": v.name}
                       for m in measure(p, spec, v.name, stable[v.name])]
    summary = "; ".join(f"{m['variant']} {m['metric']}: {m['verdict']}"
                        + (f" ({m['value']:g})" if "value" in m else "") for m in rounds)
    return {"lastAnalysis": ts(now), "measurements": rounds, "message": summary[:1024]}


def record_abort(p: Pass, spec: ModelDeploymentSpec, variant: str, version: str,
                 why: str) -> None:
    """The registry version gets a tag and its ModelVersion(s) an Event; the alias stays."""
    cfg = p.settings
    try:
        with mlflow_errors("tagging an aborted rollout"):
            client = make_client(cfg.mlflow_tracking_uri, cfg.mlflow_request_timeout)
            set_tags(client, spec.model, version, {TAG_ROLLOUT_ABORTED: f"{p.key}: {why}"})
    except kopf.TemporaryError as exc:
        p.logger.warning("could not tag v%s as aborted: %s", version, exc)
    for mv in kube.list_(f"{GROUP}/{VERSION}", "ModelVersion", p.namespace):
        if (mv.get("spec") or {}).get("model") == spec.model and str(
                (mv.get("status") or {}).get("version")) == version:
            kopf.warn(mv, reason="RolloutAborted",
                      message=f"ModelDeployment {p.name} rolled v{version} back: {why}"[:1024])
    observe_stage("deployment", "failure", 0.0)


def _owned(p: Pass, api_version: str, kind: str) -> list[dict[str, Any]]:
    selector = f"{MANAGED_BY}={OPERATOR},{LABEL_DEPLOYMENT}={label_value(p.name)}"
    try:
        items = kube.list_(api_version, kind, p.namespace, selector)
    except Exception as exc:
        if type(exc).__name__ == "ResourceNotFoundError":  # e.g. no Gateway API CRDs
            return []
        raise
    return [i for i in items if kube.owned_by(i, p.uid)]


def _deployments(p: Pass, stable: dict[str, str | None],
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
    return {d["metadata"]["name"]: d for d in _owned(p, "apps/v1", "Deployment")}


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    """What passes read of a child in the watch cache: who it is and its version (a child
    unchanged since its apply is not applied again); a Deployment's replicas and status too
    (:func:`_deployments`). 1,000 ModelDeployments have ~10,000 children."""
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


def _rolled_out(dep: dict[str, Any] | None, version: str | None) -> bool:
    """The Deployment runs ``version`` on all its replicas, all ready, no old pod left."""
    if dep is None or version is None:
        return False
    labels = (dep.get("metadata") or {}).get("labels") or {}
    if labels.get("mlops.dev/version") != label_value(str(version)):
        return False
    want = (dep.get("spec") or {}).get("replicas", 1)
    s = dep.get("status") or {}
    return (s.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
            and s.get("updatedReplicas", 0) == want and s.get("readyReplicas", 0) == want
            and s.get("replicas", 0) == want)


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
        for obj in _owned(p, api_version, kind):
            if (kind, obj["metadata"]["name"]) not in names:
                kube.delete(api_version, kind, p.namespace, obj["metadata"]["name"])
                p.logger.info("deleted %s %s", kind, obj["metadata"]["name"])
    _applied[key] = names
    return refused


def write_status(p: Pass, spec: ModelDeploymentSpec, decision: Any,
                 deployments: dict[str, dict[str, Any]], problems: dict[str, str]) -> str:
    """Variants, printer columns, rollout, phase and conditions; the phase."""
    st = p.status
    split = weights(spec, decision.canary)
    ready = desired_total = 0
    variants = []
    waiting: list[str] = []
    servers: dict[str, list[dict[str, Any]]] = {}
    for v in spec.variants:
        version = decision.stable.get(v.name)
        dep = deployments.get(variant_name(p.name, v.name))
        s = (dep or {}).get("status") or {}
        want = ((dep or {}).get("spec") or {}).get("replicas", v.replicas)
        ready += s.get("readyReplicas", 0)
        desired_total += want
        entry = {"name": v.name, "weight": sum(w for b, w in split.items() if b.variant == v.name),
                 "replicas": want, "readyReplicas": s.get("readyReplicas", 0)}
        if version:
            entry.update(version=version, modelUri=f"models:/{spec.model}/{version}")
            if not _rolled_out(dep, version):
                waiting.append(v.name + _why_waiting(p, v.name, dep, servers))
        variants.append(entry)
    if decision.canary:
        dep = deployments.get(variant_name(p.name, decision.canary[0], "canary"))
        s = (dep or {}).get("status") or {}
        ready += s.get("readyReplicas", 0)
        desired_total += ((dep or {}).get("spec") or {}).get("replicas", 1)
    if spec.retrain is not None:
        st.set(lastRetrain=last_retrain(
            kube.list_(f"{GROUP}/{VERSION}", "TrainingRun", p.namespace,
                       deployment_selector(p.name))))
    st.set(variants=variants, ready=f"{ready}/{desired_total}", traffic=summary_of(split),
           champion=variants[0].get("version"),
           challenger=variants[1].get("version") if len(variants) > 1 else None,
           url=status_url(p.name, p.namespace, spec), rollout=decision.rollout)
    st.observed()
    ro = decision.rollout or {}
    canary = ro.get("state") in ("Progressing", "Promoting", "Paused")
    aborted = ro.get("state") == "Aborted"
    progressing = bool(waiting) or canary
    progress = (ro.get("message") if canary else "") or (
        f"waiting for {', '.join(waiting)}" if waiting else "")
    if problems or aborted:
        message = "; ".join([*problems.values(), *([ro.get("message")] if aborted else [])])
        phase = "Degraded" if any(v.get("version") for v in variants) else "Pending"
        reason = "RolloutAborted" if aborted else _problem_reason(problems)
        if st.cond("Degraded", True, reason, message):
            kopf.warn(p.body, reason="Degraded", message=message[:1024])
    else:
        st.cond("Degraded", False, "AsExpected", "")
        phase = "Progressing" if progressing else "Ready"
        message = progress if progressing else f"serving {summary_of(split)}"
    st.cond("Progressing", progressing, "RollingOut" if progressing else "Stable", progress)
    if st.cond("Ready", phase == "Ready", phase, message):
        (kopf.info if phase in ("Ready", "Progressing") else kopf.warn)(
            p.body, reason=phase, message=(message or phase)[:1024])
    st.set(phase=phase, message=message[:1024])
    return phase


def _problem_reason(problems: dict[str, str]) -> str:
    """The Degraded reason for what went wrong, the most fundamental first: a variant that does
    not resolve, a child the API server refused, an analysis query Prometheus rejected."""
    if any("/" not in k for k in problems):  # keyed by variant name
        return "VariantsUnresolved"
    if any(k.startswith("apply/") for k in problems):
        return "ApplyRefused"
    return "AnalysisQueryRejected"


def _why_waiting(p: Pass, variant: str, dep: dict[str, Any] | None,
                 servers: dict[str, list[dict[str, Any]]]) -> str:
    """Why a variant's pods are not ready: pods refused (quota, admission) or waiting.
    ``servers``: the pass's model-server pods by variant, listed on first use (one list per
    pass, not one per waiting variant)."""
    for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f" ({cond.get('reason', 'FailedCreate')}: {cond.get('message', '')})"
    if not servers:
        servers[""] = []  # listed (a ModelDeployment without pods lists once too)
        for pod in kube.list_("v1", "Pod", p.namespace,
                              f"{LABEL_DEPLOYMENT}={label_value(p.name)},"
                              f"{LABEL_COMPONENT}={COMPONENT_SERVER}"):
            servers.setdefault(((pod.get("metadata") or {}).get("labels") or {}).get(
                LABEL_VARIANT, ""), []).append(pod)
    pods = servers.get(variant, [])
    why = pending_reason(pods)
    if why:
        return f" ({why[0]}: {why[1]})"
    for pod in pods:  # running, but the readiness probe says no (e.g. the model cannot load)
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "False":
                return f" (pod {pod['metadata']['name']} not ready: {cond.get('message') or cond.get('reason') or 'readiness probe failing'})"
    return ""


def _forget(key: tuple[str, str]) -> None:
    WATCH.unfollow(f"ModelDeployment/{key[0]}/{key[1]}")
    _applied.pop(key, None)
    _last_apply.pop(key, None)


CONTROLLER = controller(
    "ModelDeployment", PLURAL, reconcile,
    children=[("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps"),
              ("", "v1", "serviceaccounts"), ("rbac.authorization.k8s.io", "v1", "roles"),
              ("rbac.authorization.k8s.io", "v1", "rolebindings"),
              (GROUP, VERSION, "trainingruns")], forget=_forget, slim=_slim,
)
