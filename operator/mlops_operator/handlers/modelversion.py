"""ModelVersion controller: register → (validation Job) → gates → promote; alias follow-up.

The state machine (``status.phase``)::

    Pending ─▶ Validating ─┬─▶ Rejected                        (a gate failed)
                           ├─▶ Failed                          (bad source / version / Job)
                           └─▶ Validated ─┬─▶ AwaitingApproval ─(spec.approved)─▶ Promoted
                                          ├─▶ Promoted         (mode Auto)
                                          └─ stays Validated   (lost to a concurrent candidate)
    Promoted ─(alias moved by another ModelVersion / by hand)─▶ Validated + condition

The shape of every controller (docs/architecture.md): :func:`reconcile` is one idempotent pass.
A generation is decided once (``observedGeneration`` + a final phase); later passes of a
Promoted version only check that it still holds its alias, from the per-model cache of
:mod:`mlops_operator.aliases` (one registry read per model per ``resync_seconds``, which also
wakes the version when the alias moves). The validation Job's events wake its ModelVersion.
Pure parts live in :mod:`mlops_operator.validation` and :mod:`mlops_operator.builders`; registry
I/O in :mod:`mlops_operator.registry`.
"""

from __future__ import annotations

import time
from typing import Any

import kopf
from pydantic import ValidationError

from .. import kube
from .. import registry as reg
from ..aliases import WATCH
from ..api import ModelVersionSpec
from ..builders.common import LABEL_TRAININGRUN
from ..builders.jobs import job_outcome, pod_termination_message
from ..builders.modelversion import (
    build_validation_job,
    check_dicts,
    validation_job_key,
    validation_job_name,
    validation_job_selector,
)
from ..conditions import now_iso
from ..controller import Pass, Status, Waiting, controller
from ..metrics import observe_stage
from ..mlflow_utils import is_unreachable, make_client, mlflow_errors
from ..validation import (
    Baseline,
    Contender,
    checks_tag,
    compared_aliases,
    evaluate_gates,
    failure_summary,
    passed,
    primary_metric,
    promotion_decision,
)

PLURAL = "modelversions"
DECIDED = ("Promoted", "Rejected", "Failed", "Validated")


def _client(p: Pass) -> Any:
    return make_client(p.settings.mlflow_tracking_uri, p.settings.mlflow_request_timeout)


#: ``status.message`` is at most this long (the CRD refuses a longer one, and the whole status
#: write with it); the condition keeps the full text.
MESSAGE_MAX = 1024


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_MAX else message[:MESSAGE_MAX - 3] + "..."


def _fail(p: Pass, reason: str, message: str, phase: str = "Failed") -> None:
    """Terminal outcome for this generation: status, condition, Warning Event."""
    p.status.set(phase=phase, message=_clip(message))
    p.status.observed()
    p.status.cond("Ready", False, reason, message)
    kopf.warn(p.body, reason=reason, message=message)


def _follower(p: Pass) -> str:
    return f"ModelVersion/{p.key}"


def reconcile(p: Pass) -> None:
    """One pass over a ModelVersion (see the module docstring)."""
    st = p.status
    try:
        mv = ModelVersionSpec.model_validate(p.spec)
    except ValidationError as exc:
        _fail(p, "InvalidSpec", f"invalid spec: {exc}")
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    decided = st.get("observedGeneration") == p.generation
    if decided and st.phase == "Promoted":
        follow_alias(p, mv)
        return
    WATCH.unfollow(_follower(p))
    if decided and (st.phase in DECIDED or (st.phase == "AwaitingApproval" and not mv.approved)):
        return
    started = time.monotonic()
    try:
        with mlflow_errors(f"reconciling ModelVersion {p.key}"):
            pipeline(p, mv, started)
    except kopf.TemporaryError as exc:
        if exc.__cause__ is not None and is_unreachable(exc.__cause__):
            st.cond("MLflowReachable", False, "MLflowUnreachable",
                    f"MLflow is unreachable: {exc.__cause__}")
            st.cond("Ready", False, "MLflowUnreachable",
                    "waiting for MLflow; nothing is promoted until it is back")
            if not st.phase:
                st.set(phase="Pending")
        raise
    if st.phase == "Promoted":
        follow_alias(p, mv)


def pipeline(p: Pass, mv: ModelVersionSpec, started: float) -> None:
    """Register (or find) the version, run the validation Job, evaluate gates, promote."""
    st = p.status
    client = _client(p)
    version_obj = registry_version(p, mv, client)
    st.cond("MLflowReachable", True, "Reachable", "")
    version = str(version_obj.version)
    run_id = version_obj.run_id or None
    st.set(version=version, source=version_obj.source, runId=run_id, phase="Validating")
    st.cond("Ready", False, "Validating", "running the validation gates")
    tags = reg.lineage_tags(p.namespace, p.name, run_id,
                            (p.meta.get("labels") or {}).get(LABEL_TRAININGRUN))
    reg.set_tags(client, mv.model, version, {**tags, **(mv.tags or {})})
    job = mv.validation.job if mv.validation else None
    job_name = validation_job_name(p.name, validation_job_key(mv.model, version, job)) \
        if job else None
    prune_validation_jobs(p, keep=job_name)
    st.set(validationJob=job_name)
    if job_name:
        job_started = run_validation_job(p, mv, version, run_id)
        if job_started is None:
            return  # failed: status written
        started = min(started, job_started)
    metrics = reg.run_metrics(client, run_id)
    checks, baseline_version = gate(p, mv, client, version, run_id, metrics)
    if not passed(checks):
        reason = failure_summary(checks)
        reg.set_tags(client, mv.model, version, {
            reg.TAG_VALIDATION: "rejected", reg.TAG_CHECKS: checks_tag(checks),
            reg.TAG_REJECTED_REASON: reason,
        })
        st.cond("Validated", False, "GatesFailed", reason)
        st.cond("Promoted", False, "Rejected", "not promoted: validation failed")
        st.set(alias=None)
        _fail(p, "Rejected", f"rejected: {reason}", phase="Rejected")
        observe_stage("validation", "rejected", time.monotonic() - started)
        p.logger.info("rejected: %s", reason)
        return
    reg.set_tags(client, mv.model, version, {
        reg.TAG_VALIDATION: "passed", reg.TAG_CHECKS: checks_tag(checks),
    })
    if reg.TAG_REJECTED_REASON in (version_obj.tags or {}):
        client.delete_model_version_tag(mv.model, version, reg.TAG_REJECTED_REASON)
    summary = f"{len(checks)} checks passed" if checks else "no gates: valid"
    st.cond("Validated", True, "GatesPassed", summary)
    observe_stage("validation", "success", time.monotonic() - started)
    if mv.promote.mode == "Manual" and not mv.approved:
        msg = f"{summary}; waiting for spec.approved: true to move {mv.promote.alias}"
        st.set(phase="AwaitingApproval", message=msg, previousChampion=baseline_version)
        st.observed()
        st.cond("Ready", False, "AwaitingApproval", msg)
        st.cond("Promoted", False, "AwaitingApproval", msg)
        kopf.info(p.body, reason="AwaitingApproval", message=msg)
        return
    promote(p, mv, client, version, metrics, baseline_version)


def registry_version(p: Pass, mv: ModelVersionSpec, client: Any) -> Any:
    """The registry version: pinned, recorded earlier, or registered now from ``source``."""
    st = p.status
    try:
        if mv.version is not None:
            return reg.get_version(client, mv.model, mv.version)
        if st.get("version"):
            return reg.get_version(client, mv.model, str(st.get("version")))
        found = reg.register(client, mv.model, mv.source or "", key=p.uid, tags=mv.tags,
                             description=mv.description)
        kopf.info(p.body, reason="Registered",
                  message=f"registered {mv.source} as {mv.model} v{found.version}")
        return found
    except reg.SourceNotFound as exc:
        st.cond("MLflowReachable", True, "Reachable", "")
        if mv.version is None:
            _fail(p, "SourceNotFound", str(exc))
            observe_stage("validation", "failure", 0.0)
            raise kopf.PermanentError(str(exc)) from exc
        # A pinned version may simply not be registered yet (GitOps applies the ModelVersion
        # before the training that makes it finishes): wait for it.
        message = f"{exc}; waiting for it to be registered"
        if st.condition("Ready").get("reason") != "VersionNotFound":
            kopf.warn(p.body, reason="VersionNotFound", message=message)
        st.set(phase="Pending", message=message)
        st.observed()  # this generation was seen: it waits for its version
        st.cond("Ready", False, "VersionNotFound", message)
        raise kopf.TemporaryError(message, delay=max(5.0, p.settings.resync_seconds)) from exc


def gate(p: Pass, mv: ModelVersionSpec, client: Any, version: str, run_id: str | None,
         metrics: dict[str, float]) -> tuple[list[Any], str | None]:
    """Evaluate the gates against the compared aliases; ``(checks, current alias holder)``."""
    baselines: dict[str, Baseline | None] = {}
    for alias in compared_aliases(mv.validation):
        holder = reg.alias_holder(client, mv.model, alias)
        baselines[alias] = None if holder is None else Baseline(
            alias=alias, version=str(holder.version), run_id=holder.run_id,
            metrics=reg.run_metrics(client, holder.run_id),
        )
    promote_holder = reg.alias_holder(client, mv.model, mv.promote.alias)
    checks = evaluate_gates(mv.validation, metrics, baselines, run_id=run_id or "?",
                            candidate_version=version, force=mv.promote.force)
    p.status.set(checks=check_dicts(checks), validatedGeneration=p.generation)
    metric = primary_metric(mv.validation)
    if metric is not None:
        value = metrics.get(metric.name)
        p.status.set(primaryMetric={"name": metric.name,
                                    **({"value": value} if value is not None else {})})
    return checks, str(promote_holder.version) if promote_holder else None


def promote(p: Pass, mv: ModelVersionSpec, client: Any, version: str,
            metrics: dict[str, float], baseline_version: str | None) -> None:
    """Move the alias under the per-model lock, following the concurrency rule."""
    st = p.status
    alias = mv.promote.alias
    metric = primary_metric(mv.validation)
    started = time.monotonic()
    with reg.model_lock(mv.model):
        holder = reg.alias_holder(client, mv.model, alias)
        holder_c = None
        if holder is not None:
            holder_metrics = reg.run_metrics(client, holder.run_id) if metric else {}
            holder_c = Contender(str(holder.version),
                                 holder_metrics.get(metric.name) if metric else None)
        candidate = Contender(version, metrics.get(metric.name) if metric else None)
        decision = promotion_decision(candidate, alias, holder_c, baseline_version,
                                      metric.direction if metric else "HigherIsBetter",
                                      force=mv.promote.force)
        previous = holder_c.version if holder_c else None
        if decision.move:
            outside = previous is not None and reg.alias_moved_externally(
                previous, reg.ledger(client, mv.model, alias))
            tags = {reg.TAG_PROMOTED_BY: p.key, reg.TAG_PROMOTED_AT: now_iso(),
                    reg.TAG_PROMOTED_ALIAS: alias, reg.TAG_PREVIOUS_CHAMPION: previous or ""}
            if mv.promote.force:
                tags[reg.TAG_ROLLBACK] = f"from v{previous}" if previous else "from none"
            reg.move_alias(client, mv.model, alias, version, tags)
            WATCH.read(client, mv.model)  # followers of the model (deployments) learn it now
            if outside:
                kopf.warn(p.body, reason="AliasMovedExternally",
                          message=f"{alias} had been moved outside the operator to v{previous}; "
                          f"replacing it with validated v{version}")
    st.observed()
    if decision.move or decision.reason == "AlreadyHoldsAlias":
        if not decision.move:
            previous = st.get("previousChampion")
        st.set(phase="Promoted", alias=alias, previousChampion=previous, message=decision.message,
               promotedTime=now_iso() if decision.move else st.get("promotedTime"))
        st.cond("Promoted", True, decision.reason, decision.message)
        st.cond("AliasInSync", True, "AliasHeld", f"{alias} points to v{version}")
        st.cond("Ready", True, "Promoted", decision.message)
        if decision.move:
            observe_stage("promotion", "rollback" if mv.promote.force else "success",
                          time.monotonic() - started)
            kopf.info(p.body, reason="Rollback" if mv.promote.force else "Promoted",
                      message=decision.message)
        return
    st.set(phase="Validated", alias=None, previousChampion=baseline_version,
           message=decision.message)
    st.cond("Promoted", False, decision.reason, decision.message)
    st.cond("Ready", True, decision.reason, decision.message)
    observe_stage("promotion", "skipped", time.monotonic() - started)
    kopf.info(p.body, reason=decision.reason, message=decision.message)


def run_validation_job(p: Pass, mv: ModelVersionSpec, version: str,
                       run_id: str | None) -> float | None:
    """Create the validation Job if absent and wait for it (its events wake this object).

    Returns a monotonic start time once it completed, None when it failed (status written).
    """
    assert mv.validation and mv.validation.job
    manifest = build_validation_job(
        mv_name=p.name, namespace=p.namespace, uid=p.uid, model=mv.model, version=version,
        run_id=run_id, job=mv.validation.job, tracking_uri=p.settings.pod_tracking_uri,
        generation=p.generation,
    )
    name = manifest["metadata"]["name"]
    job, created = kube.create_or_get(manifest)
    if created:
        kopf.info(p.body, reason="ValidationJobCreated", message=f"created Job {name}")
    outcome, _, _ = job_outcome(job)
    if outcome not in ("Succeeded", "Failed"):
        refused = None if (job.get("status") or {}).get("active") else kube.failed_create(
            p.namespace, job["metadata"]["uid"])
        if refused:
            message = f"validation Job {name} cannot create its pod: {refused}"
            if p.status.cond("Ready", False, "FailedCreate", message):
                kopf.warn(p.body, reason="FailedCreate", message=message[:1024])
            p.requeue(min(3.0, p.settings.resync_seconds))
        else:
            p.status.cond("Ready", False, "ValidationJobRunning", f"waiting for Job {name}")
            p.requeue(p.settings.resync_seconds)  # events come first; this is the safety net
        raise Waiting(f"waiting for validation Job {name}")
    if outcome == "Failed":
        pods = kube.list_("v1", "Pod", p.namespace, f"job-name={name}")
        detail = next((m for m in map(pod_termination_message, pods) if m), "")
        message = f"validation Job {name} failed: {detail or 'no termination message'}"
        p.status.cond("Validated", False, "ValidationJobFailed", message)
        _fail(p, "ValidationJobFailed", message)
        observe_stage("validation", "failure", 0.0)
        return None
    return time.monotonic()


def prune_validation_jobs(p: Pass, keep: str | None) -> None:
    """Delete this ModelVersion's validation Jobs other than ``keep`` (those of a superseded
    spec), with their pods (background propagation)."""
    for job in kube.list_("batch/v1", "Job", p.namespace, validation_job_selector(p.name)):
        meta = job["metadata"]
        if meta["name"] == keep or not kube.owned_by(job, p.uid) or meta.get("deletionTimestamp"):
            continue
        if kube.delete("batch/v1", "Job", p.namespace, meta["name"]):
            kopf.info(p.body, reason="ValidationJobDeleted",
                      message=f"deleted Job {meta['name']} of a superseded spec")


def follow_alias(p: Pass, mv: ModelVersionSpec) -> None:
    """A Promoted version: does it still hold its alias? Reported, never moved back."""
    st = p.status
    alias = str(st.get("alias") or mv.promote.alias)
    version = str(st.get("version"))
    wake = _waker(p)
    WATCH.follow(mv.model, _follower(p), wake)
    try:
        client = _client(p)
        current = WATCH.aliases(client, mv.model, p.settings.resync_seconds).get(alias)
        if current == version:
            _reachable(st)
            return
        with reg.model_lock(mv.model):
            current = WATCH.read(client, mv.model).get(alias)
            ledger = reg.ledger(client, mv.model, alias)
            holder = reg.get_version(client, mv.model, current) if current else None
    except Exception as exc:
        if is_unreachable(exc):
            if st.condition("MLflowReachable").get("status") != "False":
                st.cond("MLflowReachable", False, "MLflowUnreachable",
                        f"MLflow is unreachable: {exc}")
            raise kopf.TemporaryError(f"MLflow unreachable: {exc}",
                                      delay=p.settings.resync_seconds) from exc
        raise
    _reachable(st)
    if current == version:
        return
    where = f"v{current}" if current else "nowhere (removed)"
    if reg.alias_moved_externally(current, ledger):
        msg = (f"{alias} of {mv.model} now points to {where}, moved outside the operator "
               f"(the operator last set v{ledger}); not moving it back")
        st.cond("AliasInSync", False, "AliasMovedExternally", msg)
        st.cond("Promoted", False, "AliasMovedExternally", msg)
        kopf.warn(p.body, reason="AliasMovedExternally", message=msg)
    else:
        by = (holder.tags or {}).get(reg.TAG_PROMOTED_BY, "the operator") if holder else "?"
        msg = f"superseded: {alias} of {mv.model} moved to {where} by {by}"
        st.cond("AliasInSync", True, "Superseded", msg)
        st.cond("Promoted", False, "Superseded", msg)
        kopf.info(p.body, reason="Superseded", message=msg)
    st.set(phase="Validated", alias=None, message=msg)
    WATCH.unfollow(_follower(p))
    p.logger.info(msg)


def _reachable(st: Status) -> None:
    if st.condition("MLflowReachable").get("status") != "True":
        st.cond("MLflowReachable", True, "Reachable", "")


def _waker(p: Pass) -> Any:
    key = (p.namespace, p.name)
    return lambda: CONTROLLER.enqueue(key)


CONTROLLER = controller(
    "ModelVersion", PLURAL, reconcile, children=[("batch", "v1", "jobs")],
    forget=lambda key: WATCH.unfollow(f"ModelVersion/{key[0]}/{key[1]}"),
)
