"""TrainingRun controller: MLflow run first, then the Job, then results and registration.

The shape of every controller (docs/architecture.md): :func:`reconcile` is one pass over a
TrainingRun as last seen; it advances it by at most one side effect — the first pass two, the
run and then the Job, with the status written in between (step 2) — and records the outcome
in ``p.status`` (written in one patch at the end of the pass, when anything changed):

1. **run** — get-or-create the experiment and the MLflow run. The run is found by its uid tag
   before one is created, so a crash between "created" and "recorded" never makes a second
   one. MLflow unreachable → ``MLflowReachable=False`` and a retry; no Job exists until the run
   does.
2. **job** — the Job ``<tr>-train`` as the controller's Job watch last saw it; when the watch
   has not seen it, read (``status.jobName`` set: a restart, the watch not caught up yet) or
   created if absent (found again after a crash), owned by the TrainingRun; a Job of the same
   name owned by someone else fails the run. Before it creates the Job the pass writes, in one
   status write (:meth:`Pass.flush`), ``status.mlflowRunId`` (the spec is immutable from then
   on, by CEL), ``status.jobName`` and the Pending state a new Job is in — so "run id recorded
   → Job created" holds in the API, a failed write ends the pass before the Job, and the pass
   that creates the Job has nothing left to write.
3. **track** — Pending/Running from the Job and its pod (with the reason a pod waits for);
   Failed → the Job's reason, the failing container's exit code and last lines, a Warning
   Event, the MLflow run ended FAILED; Succeeded → metrics into status, run ended FINISHED,
   model registered once per TrainingRun uid, ModelVersion ``<model>-v<n>`` created.

Events of the Job wake the TrainingRun at once; while it is active a pass also runs every
``resync_seconds``. The pods (and, while there is none, the Job's ``FailedCreate`` Events) are
listed only when something can have changed: not right after the pass created the Job, and not
again for the same Job version within :data:`LOOKUP_FRESH_SECONDS` (the passes that the
finalizer kopf adds and the Job's ADDED event bring); a Job without a pod is looked at again
after 3 s, so a refused pod shows within seconds. Deletion (``@kopf.on.delete``) deletes the
Job and ends a still-running MLflow run as KILLED.

**Failpoints (test only, :mod:`mlops_operator.failpoints`).** ``after-run-created``,
``after-job-created``, ``after-registered``: the operator exits right after that side effect and
before it is recorded in status (the Job's name is recorded before it is created, so
``after-job-created`` is "the Job exists, the pass did not finish"); ``before-job-created``:
after the status names the Job and before it exists.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from .. import GROUP, VERSION, kube, tracking
from ..api import TrainingRunSpec
from ..builders.jobs import failure_message, job_outcome, pending_reason
from ..builders.trainingrun import (
    CONTAINER,
    build_job,
    build_model_version,
    experiment_name,
    job_name,
    model_source,
    primary_metric_name,
    registered_model_name,
    registers,
    run_tags,
)
from ..conditions import now_iso
from ..controller import Pass, controller
from ..failpoints import failpoint
from ..metrics import observe_stage
from ..mlflow_utils import (
    TAG_TRAININGRUN,
    TAG_UID,
    is_unreachable,
    make_client,
    mlflow_errors,
    register_version,
)
from ..settings import get_settings
from ..tracking import TAG_DATASET_DIGEST, end_run, ensure_experiment, find_run

log = logging.getLogger(__name__)

PLURAL = "trainingruns"
TERMINAL = ("Succeeded", "Failed")
#: Retries of the deletion handler while MLflow is unreachable before it lets go.
DELETE_RETRIES = 5
WAITING = "waiting for the training pod to start"
#: A pass does not list the pods again for a Job version that a pass looked at this recently.
LOOKUP_FRESH_SECONDS = 1.5
#: per TrainingRun: (Job uid, Job resourceVersion, monotonic time) of the last pod lookup
_looked: dict[tuple[str, str], tuple[str, str, float]] = {}


def _seconds_since(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        start = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (dt.datetime.now(dt.UTC) - start).total_seconds()


def _client() -> Any:
    cfg = get_settings()
    return make_client(cfg.mlflow_tracking_uri, cfg.mlflow_request_timeout)


def fail(p: Pass, reason: str, message: str) -> None:
    """Record a terminal failure: status, Warning Event, stage metric."""
    st = p.status
    st.cond("Ready", False, reason, message)
    st.cond("Progressing", False, reason, message)
    st.set(phase="Failed", completionTime=now_iso(), message=message[:1024])
    kopf.warn(p.body, reason="TrainingFailed", message=f"{reason}: {message}"[:1024])
    observe_stage("training", "failure", _seconds_since(st.get("startTime")))
    p.logger.warning("TrainingRun failed (%s): %s", reason, message)


def _mlflow_reachable(p: Pass) -> None:
    if p.status.condition("MLflowReachable").get("status") == "False":
        p.status.cond("MLflowReachable", True, "Connected", "MLflow answers again")


# -- the pass ---------------------------------------------------------------------------------
def reconcile(p: Pass) -> None:
    """One pass: run → job → track (see the module docstring)."""
    st = p.status
    if st.phase in TERMINAL or p.meta.get("deletionTimestamp"):
        return
    try:
        spec = TrainingRunSpec.model_validate(p.spec)
    except ValueError as exc:
        fail(p, "InvalidSpec", f"invalid spec: {exc}")
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    st.observed()
    try:
        run_id = st.get("mlflowRunId") or record_run(p, spec)
        job, created = ensure_job(p, spec, str(run_id))
        track(p, spec, job, str(run_id), created)
    except kopf.TemporaryError as exc:
        if exc.__cause__ is not None and is_unreachable(exc.__cause__) and (
                st.condition("MLflowReachable").get("status") != "False"):
            st.cond("MLflowReachable", False, "MLflowUnreachable", str(exc))
        raise
    if st.phase not in TERMINAL:
        p.requeue(p.settings.resync_seconds)


def record_run(p: Pass, spec: TrainingRunSpec) -> str:
    """Step 1: the MLflow run (found by uid or created), recorded in status; its id."""
    from ..mlflow_utils import MlflowException

    st = p.status
    experiment = experiment_name(spec)
    try:
        with mlflow_errors("creating the MLflow run"):
            client = _client()
            exp_id = ensure_experiment(client, experiment)
            tags = run_tags(p.namespace, p.name, p.uid, spec)
            p.ensure_active()  # a replica kopf has just paused creates nothing (HA handover)
            run, created = tracking.ensure_run(client, exp_id, p.uid, p.name, tags, spec.params)
    except kopf.TemporaryError as exc:
        message = f"{exc}; retrying, no Job is created until the MLflow run exists"
        if st.cond("MLflowReachable", False, "MLflowUnreachable", message):
            kopf.warn(p.body, reason="MLflowUnreachable", message=message[:1024])
        st.cond("Ready", False, "MLflowUnreachable", message)
        st.set(phase="Pending", message=message[:1024])
        raise
    except MlflowException as exc:
        fail(p, "MLflowError", f"MLflow rejected the run: {exc}")
        raise kopf.PermanentError(f"MLflow rejected the run: {exc}") from exc
    if created:
        failpoint("after-run-created", p.key)
    run_id = run.info.run_id
    st.cond("MLflowReachable", True, "Connected", f"MLflow run {run_id} exists")
    st.cond("Ready", False, "RunCreated", f"MLflow run {run_id} created")
    st.cond("Progressing", True, "RunCreated", f"MLflow run {run_id} created")
    st.set(phase="Pending", mlflowRunId=run_id, startTime=st.get("startTime") or now_iso(),
           message=f"MLflow run {run_id} in experiment {experiment}")
    if spec.dataset is not None:
        st.set(dataset={"uri": spec.dataset.uri,
                        **({"version": spec.dataset.version} if spec.dataset.version else {})})
    if created:  # found (made by an earlier pass, or by another replica): announced already
        kopf.info(p.body, reason="RunCreated",
                  message=f"MLflow run {run_id} in experiment {experiment}")
    return str(run_id)


def ensure_job(p: Pass, spec: TrainingRunSpec, run_id: str) -> tuple[dict[str, Any], bool]:
    """Step 2: the training Job (as its watch saw it, else read, else created), recorded in
    status; ``(job, created by this pass)``."""
    cfg = p.settings
    name = job_name(p.name)
    job = p.child("Job", name)
    if job is None and p.status.get("jobName") == name:
        job = kube.get("batch/v1", "Job", p.namespace, name)  # None: deleted, create it again
    if job is not None:
        created = False
    else:
        manifest = build_job(p.name, p.namespace, p.uid, spec, run_id, cfg.pod_tracking_uri,
                             experiment_name(spec), cfg.default_training_image)
        if p.status.get("jobName") != name:
            # one status write before the Job exists: the run id (on the first pass), the
            # Job's name and the state a new Job is in (what the pass would write after it);
            # a failed write ends the pass before the Job, a crash after it finds no Job
            # under that name and creates it
            p.status.set(jobName=name)
            _show(p.status, "Pending", "JobPending", WAITING)
            p.flush()
            failpoint("before-job-created", p.key)
        p.ensure_active()
        job, created = _create_job(p, manifest, run_id)
    p.saw_child(job)
    if not kube.owned_by(job, p.uid):
        if job["metadata"].get("deletionTimestamp"):
            raise kopf.TemporaryError(f"waiting for the old Job {name} to be deleted", delay=2)
        message = f"Job {name} exists and does not belong to this TrainingRun"
        fail(p, "JobConflict", message)
        raise kopf.PermanentError(message)
    if p.status.get("jobName") != name:  # found, not created: a run recorded by an older pass
        p.status.set(jobName=name)
    return job, created


def _create_job(p: Pass, manifest: dict[str, Any], run_id: str) -> tuple[dict[str, Any], bool]:
    """Create the Job (or find it: 409); a Job the apiserver rejects fails the run."""
    name = manifest["metadata"]["name"]
    try:
        job, created = kube.create_or_get(manifest)
    except Exception as exc:
        if not kube.is_status(exc, 400, 422):
            raise  # a 403 (RBAC, a quota on Jobs) is the controller's slow retry, not a failure
        message = f"cannot create Job {name}: {kube.error_message(exc)}"
        finish_run(run_id, "FAILED")
        fail(p, "InvalidJob", message)
        raise kopf.PermanentError(message) from exc
    if created:
        failpoint("after-job-created", p.key)
        kopf.info(p.body, reason="JobCreated", message=f"Job {name} created")
    return job, created


def _looked_recently(p: Pass, job: Mapping[str, Any], created: bool) -> bool:
    """Whether a pass has looked at this version of the Job's pods just now (or created the
    Job: no pod and no FailedCreate can exist yet); records this pass's look otherwise."""
    meta = job.get("metadata") or {}
    version = (str(meta.get("uid")), str(meta.get("resourceVersion")))
    last = _looked.get((p.namespace, p.name))
    now = time.monotonic()
    if (not created and last is not None and last[:2] == version
            and now - last[2] < LOOKUP_FRESH_SECONDS):
        return True
    _looked[(p.namespace, p.name)] = (*version, now)
    return False


def track(p: Pass, spec: TrainingRunSpec, job: dict[str, Any], run_id: str,
          created: bool = False) -> None:
    """Step 3: mirror the Job into status; finish the run when the Job is done."""
    st = p.status
    phase, reason, message = job_outcome(job)
    if phase == "Succeeded":
        succeed(p, spec, run_id)
        return
    if phase != "Failed" and _looked_recently(p, job, created):
        return  # the status holds what that look found; a change of the Job brings a pass
    selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
    pods = [] if created else kube.list_("v1", "Pod", p.namespace, selector)
    if phase == "Failed":
        text, _code = failure_message(reason, message, pods, container=CONTAINER)
        finish_run(run_id, "FAILED")
        _mlflow_reachable(p)
        fail(p, reason, text)
        return
    if any((pod.get("status") or {}).get("phase") == "Running" for pod in pods):
        phase, reason, message = "Running", "JobRunning", "the training pod is running"
    elif phase == "Pending":
        reason, message = pending_reason(pods) or ("JobPending", WAITING)
        refused = None if pods or created else kube.failed_create(p.namespace,
                                                                  job["metadata"]["uid"])
        if refused:
            reason, message = "FailedCreate", f"the training pod cannot be created: {refused}"
            if st.condition("Ready").get("reason") != reason:
                kopf.warn(p.body, reason=reason, message=message[:1024])
        if not pods:
            p.requeue(min(3.0, p.settings.resync_seconds))  # a refusal shows within seconds
    if _show(st, phase, reason, message) and phase == "Running":
        kopf.info(p.body, reason="TrainingStarted", message=message)


def _show(st: Any, phase: str, reason: str, message: str) -> bool:
    """Record an active phase and why (only when the phase or reason changes); whether it did."""
    if phase == st.phase and st.condition("Ready").get("reason") == reason:
        return False
    st.cond("Ready", False, reason, message)
    st.cond("Progressing", True, reason, message)
    st.set(phase=phase, message=message[:1024])
    return True


def finish_run(run_id: str, status: str) -> None:
    """End the MLflow run with ``status`` unless it has ended already."""
    with mlflow_errors(f"ending the MLflow run as {status}"):
        end_run(_client(), run_id, status)


def resolve_source(client: Any, run_id: str, spec: TrainingRunSpec) -> str:
    """``runs:/<id>/<path>`` when the run holds the model as artifacts, else the MLflow 3
    LoggedModel of that name (``models:/<model_id>``); LookupError when there is no model."""
    source = model_source(run_id, spec)
    path = source.split("/", 2)[2]
    if client.list_artifacts(run_id, path):
        return source
    run = client.get_run(run_id)
    search = getattr(client, "search_logged_models", None)
    if search is not None:
        found = search(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{path}'",
        )
        if found:
            return f"models:/{found[0].model_id}"
    raise LookupError(f"the run logged no model at artifact path {path!r}")


def succeed(p: Pass, spec: TrainingRunSpec, run_id: str) -> None:
    """Metrics → status, run FINISHED, registry version and ModelVersion once each."""
    st = p.status
    client = _client()
    with mlflow_errors("reading the run's results"):
        run = client.get_run(run_id)
        metrics = tracking.run_metrics(run)
        digest = run.data.tags.get(TAG_DATASET_DIGEST)
        end_run(client, run_id, "FINISHED")
    st.set(metrics=metrics)
    if digest:
        st.set(dataset={**(st.get("dataset") or {}), "digest": digest})
    metric = primary_metric_name(spec)
    if metric:
        st.set(primaryMetric={"name": metric,
                              **({"value": metrics[metric]} if metric in metrics else {})})
    summary = "training succeeded"
    if registers(spec):
        try:
            with mlflow_errors("registering the model"):
                version = register_version(
                    client, registered_model_name(spec), resolve_source(client, run_id, spec),
                    run_id, key=p.uid,
                    tags={TAG_TRAININGRUN: p.key, TAG_UID: p.uid},
                )
        except LookupError as exc:
            fail(p, "NoModelLogged", f"training succeeded but {exc}")
            raise kopf.PermanentError(str(exc)) from exc
        failpoint("after-registered", p.key)
        mv_name = ensure_model_version(p, spec, run_id, version.version)
        st.set(modelVersion={"version": str(version.version), "name": mv_name})
        summary = (f"training succeeded; registered {registered_model_name(spec)} "
                   f"version {version.version} as ModelVersion {mv_name}")
    _mlflow_reachable(p)
    st.cond("Ready", True, "Succeeded", summary)
    st.cond("Progressing", False, "Completed", summary)
    st.set(phase="Succeeded", completionTime=now_iso(), message=summary)
    kopf.info(p.body, reason="TrainingSucceeded", message=summary)
    observe_stage("training", "success", _seconds_since(st.get("startTime")))


def ensure_model_version(p: Pass, spec: TrainingRunSpec, run_id: str, version: str | int) -> str:
    """Create the ModelVersion resource if absent; its name.

    A name held by an unrelated object gets a deterministic alternative (``<name>-<uid[:5]>``);
    one held by a ModelVersion of the same model and version is used as it is.
    """
    manifest = build_model_version(p.name, p.namespace, p.uid, spec, run_id, version)
    for attempt in (0, 1):
        name = manifest["metadata"]["name"]
        existing, created = kube.create_or_get(manifest)
        if created:
            kopf.info(p.body, reason="ModelVersionCreated",
                      message=f"ModelVersion {name} for version {version}")
            return name
        if kube.owned_by(existing, p.uid):
            return name  # ours, from before a restart
        other = existing.get("spec") or {}
        if other.get("model") == manifest["spec"]["model"] and str(other.get("version")) == str(
                version):
            kopf.warn(p.body, reason="ModelVersionExists",
                      message=f"ModelVersion {name} for version {version} already exists and was "
                      "not created by this TrainingRun; it validates the version instead")
            return name
        if attempt == 0:
            alternative = f"{name}-{p.uid[:5]}"
            kopf.warn(p.body, reason="ModelVersionNameTaken",
                      message=f"ModelVersion {name} exists for another model/version; "
                      f"using {alternative}")
            manifest["metadata"]["name"] = alternative
    raise kopf.PermanentError(f"ModelVersion names {name} are taken by other objects")


CONTROLLER = controller("TrainingRun", PLURAL, reconcile, children=[("batch", "v1", "jobs")],
                        forget=lambda key: _looked.pop(key, None))


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete(name: str, namespace: str, uid: str, spec: Mapping[str, Any],
           status: Mapping[str, Any], retry: int, logger: Any, **_: Any) -> None:
    """Delete the Job (and, by propagation, its pods); end a running MLflow run as KILLED."""
    kube.delete("batch/v1", "Job", namespace, status.get("jobName") or job_name(name))
    if status.get("phase") in TERMINAL:
        return  # the run was ended when the phase was set
    try:
        with mlflow_errors("ending the MLflow run of a deleted TrainingRun", delay=5):
            client = _client()
            run_id = status.get("mlflowRunId")
            if not run_id and status.get("startTime") is None:
                experiment = spec.get("experiment") or spec.get("model")
                exp = client.get_experiment_by_name(experiment) if experiment else None
                run = find_run(client, exp.experiment_id, uid) if exp else None
                run_id = run.info.run_id if run else None
            if run_id and end_run(client, run_id, "KILLED"):
                logger.info("MLflow run %s ended as KILLED", run_id)
    except kopf.TemporaryError:
        if retry < DELETE_RETRIES:
            raise
        logger.warning("MLflow unreachable; leaving the run of %s/%s as it is", namespace, name)
    except Exception as exc:
        if is_unreachable(exc):
            raise
        logger.warning("could not end the MLflow run: %s", exc)
