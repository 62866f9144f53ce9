"""ModelVersion controller: register → (validation Job) → gates → promote, and alias resync.

The state machine (``status.phase``)::

    Pending ─▶ Validating ─┬─▶ Rejected                        (a gate failed)
                           ├─▶ Failed                          (bad source / version / Job)
                           └─▶ Validated ─┬─▶ AwaitingApproval ─(spec.approved)─▶ Promoted
                                          ├─▶ Promoted         (mode Auto)
                                          └─ stays Validated   (lost to a concurrent candidate)
    Promoted ─(alias moved by another ModelVersion / by hand)─▶ Validated + condition

One idempotent handler (:func:`reconcile`) runs on create, resume and spec updates; kopf
retries it on ``TemporaryError`` (MLflow unreachable, validation Job still running). A timer
(:func:`resync`) checks every ``resync_seconds`` that a Promoted version still holds its alias.
Pure parts live in :mod:`mlops_operator.validation`; registry I/O in
:mod:`mlops_operator.registry`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, VERSION
from .. import registry as reg
from ..api import Check, ModelVersionSpec, ValidationJob
from ..conditions import get_condition, now_iso, set_condition
from ..metrics import RECONCILE_ERRORS, observe_stage
from ..mlflow_utils import is_unreachable, make_client, mlflow_errors
from ..settings import OperatorSettings, get_settings
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
LABEL_TRAININGRUN = "mlops.dev/trainingrun"
LABEL_MODELVERSION = "mlops.dev/modelversion"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlops-operator"}
DEFAULT_EVALUATE_COMMAND = ["python", "-m", "mlops_operator.evaluate"]
JOB_POLL_SECONDS = 3.0


# --------------------------------------------------------------------------------------------
# pure builders
# --------------------------------------------------------------------------------------------


def validation_job_name(mv_name: str) -> str:
    """Deterministic name of a ModelVersion's validation Job (≤ 63 characters)."""
    base = f"{mv_name}-validate"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(mv_name.encode()).hexdigest()[:8]
    return f"{mv_name[:45]}-{digest}-validate"


def build_validation_job(
    *,
    mv_name: str,
    namespace: str,
    model: str,
    version: str,
    run_id: str | None,
    job: ValidationJob,
    tracking_uri: str,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that evaluates ``model`` version ``version`` and logs into ``run_id``.

    The default command is this project's evaluator, ``python -m mlops_operator.evaluate``.
    """
    model_uri = f"models:/{model}/{version}"
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
        {"name": "MLFLOW_RUN_ID", "value": run_id or ""},
        {"name": "MLOPS_MODEL_URI", "value": model_uri},
        {"name": "MODEL_URI", "value": model_uri},
    ]
    if job.dataset:
        env.append({"name": "DATASET_URI", "value": job.dataset})
    container: dict[str, Any] = {
        "name": "validate",
        "image": job.image,
        "command": list(job.command) if job.command else list(DEFAULT_EVALUATE_COMMAND),
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if job.args:
        container["args"] = list(job.args)
    labels = {**MANAGED_BY, LABEL_MODELVERSION: mv_name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": validation_job_name(mv_name),
            "namespace": namespace,
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }


def job_outcome(job: Mapping[str, Any]) -> str | None:
    """``Complete``, ``Failed`` or None (still running) from a Job's conditions."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return str(cond["type"])
    return None


def pod_termination_message(pod: Mapping[str, Any]) -> str:
    """The termination message (or reason) of a pod's first terminated container."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = ((cs.get("state") or {}).get("terminated")) or (
            (cs.get("lastState") or {}).get("terminated")
        )
        if term:
            msg = (term.get("message") or "").strip()
            return msg or f"{term.get('reason', 'Error')} (exit code {term.get('exitCode')})"
    return ""


def check_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    """Checks as status JSON (camelCase, None dropped)."""
    return [c.model_dump(by_alias=True, exclude_none=True) for c in checks]


# --------------------------------------------------------------------------------------------
# helpers with I/O
# --------------------------------------------------------------------------------------------


def _settings(memo: Any) -> OperatorSettings:
    cfg = getattr(memo, "settings", None) if memo is not None else None
    return cfg if isinstance(cfg, OperatorSettings) else get_settings()


def _client(cfg: OperatorSettings) -> Any:
    return make_client(cfg.mlflow_tracking_uri, cfg.mlflow_request_timeout)


@lru_cache(maxsize=1)
def _kube_api() -> Any:
    """A kubernetes ApiClient (in-cluster, else the kubeconfig), for validation Jobs."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class _Status:
    """Accumulates a status patch and the conditions list for one handler invocation."""

    def __init__(self, status: Mapping[str, Any], patch: kopf.Patch, generation: int | None):
        self.current = dict(status or {})
        self.patch = patch
        self.generation = generation
        self.conditions: list[dict[str, Any]] = list(self.current.get("conditions") or [])

    def set(self, **fields: Any) -> None:
        for key, value in fields.items():
            self.patch.status[key] = value
            self.current[key] = value

    def cond(self, type_: str, status: bool | str, reason: str, message: str = "") -> None:
        self.conditions = set_condition(
            self.conditions, type_, status, reason, message, self.generation
        )
        self.patch.status["conditions"] = self.conditions


def _record_unreachable(st: _Status, exc: BaseException) -> None:
    st.cond("MLflowReachable", False, "MLflowUnreachable", f"MLflow is unreachable: {exc}")
    st.cond("Ready", False, "MLflowUnreachable",
            "waiting for MLflow; nothing is promoted until it is back")
    RECONCILE_ERRORS.labels(kind="ModelVersion", error="temporary").inc()


def _fail(st: _Status, body: Any, reason: str, message: str, phase: str = "Failed") -> None:
    """Terminal failure for this generation: status, condition, Warning Event."""
    st.set(phase=phase, message=message, observedGeneration=st.generation)
    st.cond("Ready", False, reason, message)
    kopf.warn(body, reason=reason, message=message)


# --------------------------------------------------------------------------------------------
# the reconcile handler
# --------------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    body: kopf.Body,
    patch: kopf.Patch,
    namespace: str,
    name: str,
    uid: str,
    memo: Any,
    logger: Any,
    **_: Any,
) -> None:
    """Drive one ModelVersion through its state machine; safe to run again at any point."""
    generation = meta.get("generation")
    st = _Status(status, patch, generation)
    phase = st.current.get("phase")
    observed = st.current.get("observedGeneration")
    try:
        mv = ModelVersionSpec.model_validate(dict(spec))
    except ValidationError as exc:
        _fail(st, body, "InvalidSpec", f"invalid spec: {exc}")
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    if observed == generation and phase in ("Promoted", "Rejected", "Failed", "Validated"):
        return  # already decided for this generation (resume after a restart)
    if observed == generation and phase == "AwaitingApproval" and not mv.approved:
        return
    cfg = _settings(memo)
    started = time.monotonic()
    try:
        with mlflow_errors(f"reconciling ModelVersion {namespace}/{name}"):
            _pipeline(mv, st, body, cfg, namespace, name, uid, meta, started, logger)
    except kopf.TemporaryError as exc:
        if exc.__cause__ is not None and is_unreachable(exc.__cause__):
            _record_unreachable(st, exc.__cause__)
            if not st.current.get("phase"):
                st.set(phase="Pending")
        raise


def _pipeline(
    mv: ModelVersionSpec,
    st: _Status,
    body: Any,
    cfg: OperatorSettings,
    namespace: str,
    name: str,
    uid: str,
    meta: Mapping[str, Any],
    started: float,
    logger: Any,
) -> None:
    client = _client(cfg)
    # ---- 1. the registry version ----------------------------------------------------------
    try:
        if mv.version is not None:
            version_obj = reg.get_version(client, mv.model, mv.version)
        elif st.current.get("version"):
            version_obj = reg.get_version(client, mv.model, str(st.current["version"]))
        else:
            version_obj = reg.register(
                client, mv.model, mv.source or "", key=uid, tags=mv.tags,
                description=mv.description,
            )
            kopf.info(body, reason="Registered",
                      message=f"registered {mv.source} as {mv.model} v{version_obj.version}")
    except reg.SourceNotFound as exc:
        st.cond("MLflowReachable", True, "Reachable", "")
        if mv.version is not None:
            # A pinned version may simply not be registered yet (GitOps applies the
            # ModelVersion before the training that makes it finishes): wait for it.
            message = f"{exc}; waiting for it to be registered"
            if (get_condition(st.conditions, "Ready") or {}).get("reason") != "VersionNotFound":
                kopf.warn(body, reason="VersionNotFound", message=message)
            st.set(phase="Pending", message=message)
            st.cond("Ready", False, "VersionNotFound", message)
            raise kopf.TemporaryError(message, delay=max(5.0, cfg.resync_seconds)) from exc
        _fail(st, body, "SourceNotFound", str(exc))
        observe_stage("validation", "failure", time.monotonic() - started)
        raise kopf.PermanentError(str(exc)) from exc
    st.cond("MLflowReachable", True, "Reachable", "")
    version = str(version_obj.version)
    run_id = version_obj.run_id or None
    st.set(version=version, source=version_obj.source, runId=run_id)
    if st.current.get("phase") in (None, "Pending", "Rejected", "Failed", "Validated",
                                   "AwaitingApproval", "Promoted"):
        st.set(phase="Validating")
    st.cond("Ready", False, "Validating", "running the validation gates")
    labels = meta.get("labels") or {}
    tags = reg.lineage_tags(namespace, name, run_id, labels.get(LABEL_TRAININGRUN))
    tags.update(mv.tags or {})
    reg.set_tags(client, mv.model, version, tags)

    # ---- 2. the optional validation Job ---------------------------------------------------
    if mv.validation and mv.validation.job:
        job_started = _run_validation_job(mv, st, body, cfg, namespace, name, version, run_id)
        if job_started is None:
            return  # failed: status written
        started = min(started, job_started)

    # ---- 3. gates --------------------------------------------------------------------------
    metrics = reg.run_metrics(client, run_id)
    baselines: dict[str, Baseline | None] = {}
    for alias in compared_aliases(mv.validation):
        holder = reg.alias_holder(client, mv.model, alias)
        baselines[alias] = None if holder is None else Baseline(
            alias=alias, version=str(holder.version), run_id=holder.run_id,
            metrics=reg.run_metrics(client, holder.run_id),
        )
    promote_holder = reg.alias_holder(client, mv.model, mv.promote.alias)
    baseline_version = str(promote_holder.version) if promote_holder else None
    checks = evaluate_gates(mv.validation, metrics, baselines, run_id=run_id or "?",
                            candidate_version=version, force=mv.promote.force)
    gate = primary_metric(mv.validation)
    st.set(checks=check_dicts(checks))
    if gate is not None:
        value = metrics.get(gate.name)
        st.set(primaryMetric={"name": gate.name, **({"value": value} if value is not None else {})})
    if not passed(checks):
        reason = failure_summary(checks)
        reg.set_tags(client, mv.model, version, {
            reg.TAG_VALIDATION: "rejected", reg.TAG_CHECKS: checks_tag(checks),
            reg.TAG_REJECTED_REASON: reason,
        })
        st.cond("Validated", False, "GatesFailed", reason)
        st.cond("Promoted", False, "Rejected", "not promoted: validation failed")
        st.set(alias=None)
        _fail(st, body, "Rejected", f"rejected: {reason}", phase="Rejected")
        observe_stage("validation", "rejected", time.monotonic() - started)
        logger.info("ModelVersion %s/%s rejected: %s", namespace, name, reason)
        return
    reg.set_tags(client, mv.model, version, {
        reg.TAG_VALIDATION: "passed", reg.TAG_CHECKS: checks_tag(checks),
    })
    if reg.TAG_REJECTED_REASON in (version_obj.tags or {}):
        client.delete_model_version_tag(mv.model, version, reg.TAG_REJECTED_REASON)
    summary = f"{len(checks)} checks passed" if checks else "no gates: valid"
    st.cond("Validated", True, "GatesPassed", summary)
    observe_stage("validation", "success", time.monotonic() - started)

    # ---- 4. promotion ---------------------------------------------------------------------
    if mv.promote.mode == "Manual" and not mv.approved:
        msg = f"{summary}; waiting for spec.approved: true to move {mv.promote.alias}"
        st.set(phase="AwaitingApproval", message=msg, observedGeneration=st.generation,
               previousChampion=baseline_version)
        st.cond("Ready", False, "AwaitingApproval", msg)
        st.cond("Promoted", False, "AwaitingApproval", msg)
        kopf.info(body, reason="AwaitingApproval", message=msg)
        return
    _promote(mv, st, body, client, namespace, name, version, run_id, metrics, baseline_version)


def _promote(
    mv: ModelVersionSpec,
    st: _Status,
    body: Any,
    client: Any,
    namespace: str,
    name: str,
    version: str,
    run_id: str | None,
    metrics: Mapping[str, float],
    baseline_version: str | None,
) -> None:
    """Move the alias under the per-model lock, following the concurrency rule."""
    alias = mv.promote.alias
    gate = primary_metric(mv.validation)
    direction = gate.direction if gate else "HigherIsBetter"
    started = time.monotonic()
    with reg.model_lock(mv.model):
        holder = reg.alias_holder(client, mv.model, alias)
        holder_c = None
        if holder is not None:
            holder_metrics = reg.run_metrics(client, holder.run_id) if gate else {}
            holder_c = Contender(str(holder.version),
                                 holder_metrics.get(gate.name) if gate else None)
        candidate = Contender(version, metrics.get(gate.name) if gate else None)
        decision = promotion_decision(candidate, alias, holder_c, baseline_version,
                                      direction, force=mv.promote.force)
        previous = holder_c.version if holder_c else None
        if decision.move:
            ledger = reg.ledger(client, mv.model, alias)
            outside = previous is not None and reg.alias_moved_externally(previous, ledger)
            tags = {
                reg.TAG_PROMOTED_BY: f"{namespace}/{name}",
                reg.TAG_PROMOTED_AT: now_iso(),
                reg.TAG_PROMOTED_ALIAS: alias,
                reg.TAG_PREVIOUS_CHAMPION: previous or "",
            }
            if mv.promote.force:
                tags[reg.TAG_ROLLBACK] = f"from v{previous}" if previous else "from none"
            reg.move_alias(client, mv.model, alias, version, tags)
            if outside:
                kopf.warn(body, reason="AliasMovedExternally",
                          message=f"{alias} had been moved outside the operator to v{previous}; "
                          f"replacing it with validated v{version}")
    if not decision.move and decision.reason == "AlreadyHoldsAlias":
        previous = st.current.get("previousChampion")
    if decision.move or decision.reason == "AlreadyHoldsAlias":
        msg = decision.message
        st.set(phase="Promoted", alias=alias, previousChampion=previous, message=msg,
               observedGeneration=st.generation,
               promotedTime=st.current.get("promotedTime") if not decision.move else now_iso())
        st.cond("Promoted", True, decision.reason, msg)
        st.cond("AliasInSync", True, "AliasHeld", f"{alias} points to v{version}")
        st.cond("Ready", True, "Promoted", msg)
        if decision.move:
            kind = "rollback" if mv.promote.force else "success"
            observe_stage("promotion", kind, time.monotonic() - started)
            reason = "Rollback" if mv.promote.force else "Promoted"
            kopf.info(body, reason=reason, message=msg)
        return
    st.set(phase="Validated", alias=None, previousChampion=baseline_version,
           message=decision.message, observedGeneration=st.generation)
    st.cond("Promoted", False, decision.reason, decision.message)
    st.cond("Ready", True, decision.reason, decision.message)
    observe_stage("promotion", "skipped", time.monotonic() - started)
    kopf.info(body, reason=decision.reason, message=decision.message)


def _run_validation_job(
    mv: ModelVersionSpec,
    st: _Status,
    body: Any,
    cfg: OperatorSettings,
    namespace: str,
    name: str,
    version: str,
    run_id: str | None,
) -> float | None:
    """Create the validation Job if absent and wait for it (``TemporaryError`` while running).

    Returns a monotonic start time once it completed, None when it failed (status written).
    """
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    assert mv.validation and mv.validation.job
    batch = k8s.BatchV1Api(_kube_api())
    job_name = validation_job_name(name)
    try:
        job = batch.read_namespaced_job(job_name, namespace).to_dict()
    except ApiException as exc:
        if exc.status != 404:
            raise kopf.TemporaryError(f"reading Job {job_name}: {exc.reason}", delay=5) from exc
        manifest = build_validation_job(
            mv_name=name, namespace=namespace, model=mv.model, version=version, run_id=run_id,
            job=mv.validation.job, tracking_uri=cfg.pod_tracking_uri,
        )
        kopf.adopt(manifest, owner=body)
        try:
            batch.create_namespaced_job(namespace, manifest)
        except ApiException as cexc:
            if cexc.status != 409:
                raise kopf.TemporaryError(f"creating Job {job_name}: {cexc.reason}",
                                          delay=5) from cexc
        kopf.info(body, reason="ValidationJobCreated", message=f"created Job {job_name}")
        st.cond("Ready", False, "ValidationJobRunning", f"waiting for Job {job_name}")
        raise kopf.TemporaryError(f"waiting for validation Job {job_name}",
                                  delay=JOB_POLL_SECONDS) from None
    outcome = job_outcome(_camel_job(job))
    if outcome is None:
        st.cond("Ready", False, "ValidationJobRunning", f"waiting for Job {job_name}")
        raise kopf.TemporaryError(f"waiting for validation Job {job_name}",
                                  delay=JOB_POLL_SECONDS)
    if outcome == "Failed":
        core = k8s.CoreV1Api(_kube_api())
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
        detail = ""
        for pod in pods:
            detail = pod_termination_message(_k8s_dict(pod)) or detail
        message = f"validation Job {job_name} failed: {detail or 'no termination message'}"
        st.cond("Validated", False, "ValidationJobFailed", message)
        _fail(st, body, "ValidationJobFailed", message)
        observe_stage("validation", "failure", 0.0)
        return None
    return time.monotonic()


def _k8s_dict(obj: Any) -> dict[str, Any]:
    """A kubernetes-client model as camelCase JSON."""
    return dict(_kube_api().sanitize_for_serialization(obj))


def _camel_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """``to_dict()`` output is snake_case; the only part read here is status.conditions."""
    return {"status": {"conditions": [
        {"type": c.get("type"), "status": c.get("status")}
        for c in ((job.get("status") or {}).get("conditions") or [])
    ]}}


# --------------------------------------------------------------------------------------------
# resync: is the alias still where we put it?
# --------------------------------------------------------------------------------------------


def _promoted(status: Mapping[str, Any] | None, **_: Any) -> bool:
    return (status or {}).get("phase") == "Promoted"


# ticks every 2 s on Promoted versions only; acts every ``resync_seconds`` (read at run time)
@kopf.timer(GROUP, VERSION, PLURAL, interval=2.0, initial_delay=2.0, when=_promoted)
def resync(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    logger: Any,
    **_: Any,
) -> None:
    """Every ``resync_seconds``: a Promoted version whose alias moved elsewhere is reported.

    Moved by another ModelVersion (the ledger agrees) → ``Superseded``; moved by anybody else
    → ``AliasMovedExternally`` with a Warning Event. The alias is never moved back.
    """
    if (status or {}).get("phase") != "Promoted" or not (status or {}).get("alias"):
        return
    cfg = _settings(memo)
    now = time.monotonic()
    if now - float(getattr(memo, "last_resync", 0.0) or 0.0) < cfg.resync_seconds:
        return
    memo.last_resync = now
    model = str(spec.get("model"))
    alias = str(status["alias"])
    version = str(status.get("version"))
    st = _Status(status, patch, meta.get("generation"))
    try:
        client = _client(cfg)
        with reg.model_lock(model):
            holder = reg.alias_holder(client, model, alias)
            ledger = reg.ledger(client, model, alias)
    except Exception as exc:
        if is_unreachable(exc):
            if (get_condition(st.conditions, "MLflowReachable") or {}).get("status") != "False":
                st.cond("MLflowReachable", False, "MLflowUnreachable",
                        f"MLflow is unreachable: {exc}")
            return
        raise
    if (get_condition(st.conditions, "MLflowReachable") or {}).get("status") != "True":
        st.cond("MLflowReachable", True, "Reachable", "")
    current = str(holder.version) if holder is not None else None
    if current == version:
        return
    where = f"v{current}" if current else "nowhere (removed)"
    if reg.alias_moved_externally(current, ledger):
        msg = (f"{alias} of {model} now points to {where}, moved outside the operator "
               f"(the operator last set v{ledger}); not moving it back")
        st.set(phase="Validated", alias=None, message=msg)
        st.cond("AliasInSync", False, "AliasMovedExternally", msg)
        st.cond("Promoted", False, "AliasMovedExternally", msg)
        kopf.warn(body, reason="AliasMovedExternally", message=msg)
    else:
        by = (holder.tags or {}).get(reg.TAG_PROMOTED_BY, "the operator") if holder else "?"
        msg = f"superseded: {alias} of {model} moved to {where} by {by}"
        st.set(phase="Validated", alias=None, message=msg)
        st.cond("AliasInSync", True, "Superseded", msg)
        st.cond("Promoted", False, "Superseded", msg)
        kopf.info(body, reason="Superseded", message=msg)
    logger.info(msg)
