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
   (its watch says so), and delete the children no longer wanted
   (:mod:`mlops_operator.handlers.md_children`).
5. **Status**: variants (pinned version, weight, ready), the printer columns, ``rollout``, the
   phase (Pending → Progressing → Ready / Degraded / Failed) and conditions, Events on every
   transition.
"""

from __future__ import annotations

import datetime as dt
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
    label_value,
)
from ..builders.jobs import pending_reason
from ..builders.modeldeployment import COMPONENT_SERVER, variant_name
from ..builders.serving import weights
from ..builders.traffic import status_url
from ..builders.traffic import traffic_summary as summary_of
from ..controller import Pass, controller
from ..metrics import observe_stage
from ..mlflow_utils import make_client, mlflow_errors
from ..registry import SourceNotFound, get_version, set_tags
from ..rollout import ab_analysis_due, analysis_due, decide, next_wakeup, parse_ts, ts
from . import md_children
from .md_children import apply_children

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
    deployments = md_children.deployments(p, stable, ro)
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
    md_children.forget(key)


CONTROLLER = controller(
    "ModelDeployment", PLURAL, reconcile,
    children=[("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps"),
              ("", "v1", "serviceaccounts"), ("rbac.authorization.k8s.io", "v1", "roles"),
              ("rbac.authorization.k8s.io", "v1", "rolebindings"),
              (GROUP, VERSION, "trainingruns")], forget=_forget, slim=md_children.slim,
)
