"""TrainingRun reconciliation: MLflow run first, then the Job, then results and registration.

One kopf **daemon** per active TrainingRun drives a small state machine, re-running the same
idempotent steps every ``resync_seconds`` (or as soon as its Job changes, see
:func:`job_changed`) until the run is Succeeded or Failed:

1. **run** — get-or-create the experiment and the MLflow run. The run is found by its uid tag
   before one is created, so a crash between "created" and "recorded" never makes a second
   one. ``status.mlflowRunId`` and ``status.startTime`` are written at once (the spec is
   immutable from then on, by CEL). MLflow unreachable → condition ``MLflowReachable=False``
   (reason ``MLflowUnreachable``) and ``kopf.TemporaryError``; no Job exists until the run does.
2. **job** — create the Job ``<tr>-train`` if absent (409 → read it), owned by the TrainingRun.
3. **track** — Pending/Running from the Job and its pod (with the reason a pod waits for);
   Failed → the Job's reason, the failing container's exit code and last lines in the
   condition, a Warning Event, the MLflow run ended FAILED; Succeeded → metrics into status,
   run ended FINISHED, model registered once per TrainingRun uid, ModelVersion ``<model>-v<n>``
   created (409 → fine).

Status is written by merge patches to the status subresource as each step completes (not at
the end of a handler), so the order "run id recorded → Job created" holds in the API.

Deletion (``@kopf.on.delete``) deletes the Job (pods follow by garbage collection) and ends a
still-running MLflow run as KILLED.

**Failpoints (test only).** ``MLOPS_FAILPOINT=after-run-created|after-job-created|
after-registered`` (optionally ``@<namespace>/<name>`` to limit it to one TrainingRun) makes
the operator process exit abruptly (``os._exit(1)``) right after that side effect and before it
is recorded in status, like etcd's gofail; the restart tests use it to prove that a restarted
operator neither duplicates nor loses anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from .. import GROUP, VERSION
from ..api import TrainingRunSpec
from ..builders.trainingrun import (
    LABEL_TRAININGRUN,
    MANAGED_BY,
    OPERATOR,
    build_job,
    build_model_version,
    experiment_name,
    failure_message,
    job_name,
    job_outcome,
    model_source,
    pending_reason,
    primary_metric_name,
    registered_model_name,
    registers,
    run_tags,
)
from ..conditions import get_condition, now_iso, set_condition
from ..metrics import observe_stage
from ..mlflow_utils import (
    TAG_TRAININGRUN,
    TAG_UID,
    is_unreachable,
    make_client,
    mlflow_errors,
    register_version,
)
from ..settings import OperatorSettings, get_settings
from ..tracking import TAG_DATASET_DIGEST, end_run, ensure_experiment, ensure_run, find_run

log = logging.getLogger(__name__)

PLURAL = "trainingruns"
TERMINAL = ("Succeeded", "Failed")
FAILPOINT_ENV = "MLOPS_FAILPOINT"
FAILPOINTS = ("after-run-created", "after-job-created", "after-registered")
#: Retries of the deletion handler while MLflow is unreachable before it lets go.
DELETE_RETRIES = 5

#: TrainingRun uid → the event its daemon sleeps on; set when its Job changes.
_wakers: dict[str, asyncio.Event] = {}
_api_lock = threading.Lock()
_api: Any = None


def failpoint(name: str, target: str = "") -> None:
    """Exit the process now if ``MLOPS_FAILPOINT`` names this point (test-only fault injection).

    ``MLOPS_FAILPOINT=<point>`` fires for any TrainingRun, ``<point>@<namespace>/<name>`` only
    for that one.
    """
    point, _, only = os.environ.get(FAILPOINT_ENV, "").partition("@")
    if point == name and (not only or only == target):
        log.warning("failpoint %s reached: exiting abruptly", name)
        logging.shutdown()
        os._exit(1)


def api_client() -> Any:
    """The process-wide Kubernetes API client (in-cluster config, else ``$KUBECONFIG``)."""
    global _api
    with _api_lock:
        if _api is None:
            from kubernetes import config

            try:
                config.load_incluster_config()
                from kubernetes.client import ApiClient

                _api = ApiClient()
            except config.ConfigException:
                _api = config.new_client_from_config()
        return _api


def _is_status(exc: BaseException, *codes: int) -> bool:
    from kubernetes.client.rest import ApiException

    return isinstance(exc, ApiException) and exc.status in codes


def _to_dict(obj: Any) -> dict[str, Any]:
    return api_client().sanitize_for_serialization(obj)


def _seconds_since(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        start = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (dt.datetime.now(dt.UTC) - start).total_seconds()


class TrainingRunReconciler:
    """One pass of the state machine over a freshly read TrainingRun."""

    def __init__(self, tr: Mapping[str, Any], cfg: OperatorSettings, logger: Any = log) -> None:
        self.tr = dict(tr)
        meta = tr["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.status: dict[str, Any] = dict(tr.get("status") or {})
        self.cfg = cfg
        self.logger = logger
        self._spec: TrainingRunSpec | None = None

    # -- helpers -----------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> TrainingRunSpec:
        """The parsed spec; an invalid one fails the run permanently."""
        if self._spec is None:
            try:
                self._spec = TrainingRunSpec.model_validate(self.tr.get("spec") or {})
            except ValueError as exc:
                self.fail("InvalidSpec", f"invalid spec: {exc}")
                raise kopf.PermanentError(f"invalid spec: {exc}") from exc
        return self._spec

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    def condition(self, type_: str, status: bool | str, reason: str, message: str = "") -> None:
        """Set a condition in the pending status (written by the next :meth:`patch`)."""
        self.status["conditions"] = set_condition(
            self.status.get("conditions"), type_, status, reason, message, self.generation
        )

    def patch(self, **fields: Any) -> None:
        """Merge ``fields`` (and the current conditions) into ``.status`` in the API."""
        from kubernetes.client import CustomObjectsApi

        self.status.update(fields)
        body: dict[str, Any] = {**fields, "conditions": self.status.get("conditions") or []}
        if self.generation is not None:
            body["observedGeneration"] = self.status["observedGeneration"] = self.generation
        try:
            CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": body}
            )
        except Exception as exc:
            if _is_status(exc, 404):
                raise kopf.TemporaryError("the TrainingRun is gone", delay=1) from exc
            raise

    def fail(self, reason: str, message: str, run_id: str | None = None) -> None:
        """Record a terminal failure: status, Warning Event, stage metric."""
        self.condition("Ready", False, reason, message)
        self.condition("Progressing", False, reason, message)
        self.patch(phase="Failed", completionTime=now_iso(), message=message[:1024])
        kopf.warn(self.tr, reason="TrainingFailed", message=f"{reason}: {message}"[:1024])
        observe_stage("training", "failure", _seconds_since(self.status.get("startTime")))
        self.logger.warning("TrainingRun failed (%s): %s", reason, message)

    def mlflow(self) -> Any:
        return make_client(self.cfg.mlflow_tracking_uri, self.cfg.mlflow_request_timeout)

    # -- the state machine -------------------------------------------------------------------
    def reconcile(self) -> bool:
        """Advance the TrainingRun as far as possible; True once it is terminal."""
        if self.phase in TERMINAL:
            return True
        client = self.mlflow()
        run_id = self.ensure_run(client)
        job = self.ensure_job(run_id)
        try:
            return self.track(client, job, run_id)
        except kopf.TemporaryError as exc:
            if "MLflow unreachable" in str(exc):  # from mlflow_errors(): say so, keep the phase
                self.condition("MLflowReachable", False, "MLflowUnreachable", str(exc))
                self.patch()
            raise

    def mlflow_reachable(self) -> None:
        """Mark MLflow reachable again (written with the next patch)."""
        cond = get_condition(self.status.get("conditions"), "MLflowReachable")
        if cond is not None and cond.get("status") != "True":
            self.condition("MLflowReachable", True, "Connected", "MLflow answers again")

    def ensure_run(self, client: Any) -> str:
        """Step 1: the MLflow run (found by uid or created), recorded in status."""
        run_id = self.status.get("mlflowRunId")
        if run_id:
            return str(run_id)
        from mlflow.exceptions import MlflowException

        spec = self.spec
        experiment = experiment_name(spec)
        try:
            with mlflow_errors("creating the MLflow run"):
                exp_id = ensure_experiment(client, experiment)
                tags = run_tags(self.namespace, self.name, self.uid, spec)
                run, created = ensure_run(client, exp_id, self.uid, self.name, tags, spec.params)
        except kopf.TemporaryError as exc:
            was = get_condition(self.status.get("conditions"), "MLflowReachable")
            message = f"{exc}; retrying, no Job is created until the MLflow run exists"
            self.condition("MLflowReachable", False, "MLflowUnreachable", message)
            self.condition("Ready", False, "MLflowUnreachable", message)
            self.patch(phase="Pending", message=message[:1024])
            if not was or was.get("status") != "False":
                kopf.warn(self.tr, reason="MLflowUnreachable", message=message[:1024])
            raise
        except MlflowException as exc:
            self.fail("MLflowError", f"MLflow rejected the run: {exc}")
            raise kopf.PermanentError(f"MLflow rejected the run: {exc}") from exc
        if created:
            failpoint("after-run-created", self.key)
        run_id = run.info.run_id
        dataset = None
        if spec.dataset is not None:
            dataset = {"uri": spec.dataset.uri}
            if spec.dataset.version:
                dataset["version"] = spec.dataset.version
        self.condition("MLflowReachable", True, "Connected", f"MLflow run {run_id} exists")
        self.condition("Ready", False, "RunCreated", f"MLflow run {run_id} created")
        self.condition("Progressing", True, "RunCreated", f"MLflow run {run_id} created")
        fields: dict[str, Any] = {
            "phase": "Pending",
            "mlflowRunId": run_id,
            "startTime": self.status.get("startTime") or now_iso(),
            "message": f"MLflow run {run_id} in experiment {experiment}",
        }
        if dataset:
            fields["dataset"] = dataset
        self.patch(**fields)
        kopf.info(
            self.tr, reason="RunCreated", message=f"MLflow run {run_id} in experiment {experiment}"
        )
        return str(run_id)

    def ensure_job(self, run_id: str) -> dict[str, Any]:
        """Step 2: the training Job, created if absent, recorded in status."""
        from kubernetes.client import BatchV1Api

        batch = BatchV1Api(api_client())
        name = job_name(self.name)
        job = self.read_job(name)
        if job is None:
            manifest = build_job(
                self.name,
                self.namespace,
                self.uid,
                self.spec,
                run_id,
                self.cfg.pod_tracking_uri,
                experiment_name(self.spec),
                self.cfg.default_training_image,
            )
            try:
                job = _to_dict(batch.create_namespaced_job(self.namespace, manifest))
            except Exception as exc:
                if _is_status(exc, 409):
                    job = self.read_job(name)
                elif _is_status(exc, 400, 403, 422):
                    message = f"cannot create Job {name}: {getattr(exc, 'body', exc)}"
                    self.finish_run(run_id, "FAILED")
                    self.fail("InvalidJob", message)
                    raise kopf.PermanentError(message) from exc
                else:
                    raise
                if job is None:
                    raise kopf.TemporaryError(f"Job {name} vanished", delay=1) from exc
            else:
                failpoint("after-job-created", self.key)
                kopf.info(self.tr, reason="JobCreated", message=f"Job {name} created")
        owners = [r.get("uid") for r in job["metadata"].get("ownerReferences") or []]
        if self.uid not in owners and job["metadata"].get("deletionTimestamp"):
            raise kopf.TemporaryError(f"waiting for the old Job {name} to be deleted", delay=2)
        if self.uid not in owners:
            message = f"Job {name} exists and does not belong to this TrainingRun"
            self.fail("JobConflict", message)
            raise kopf.PermanentError(message)
        if self.status.get("jobName") != name:
            self.condition("Ready", False, "JobCreated", f"Job {name} created")
            self.patch(jobName=name)
        return job

    def read_job(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client import BatchV1Api

        try:
            return _to_dict(BatchV1Api(api_client()).read_namespaced_job(name, self.namespace))
        except Exception as exc:
            if _is_status(exc, 404):
                return None
            raise

    def job_pods(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        from kubernetes.client import CoreV1Api

        selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
        pods = CoreV1Api(api_client()).list_namespaced_pod(self.namespace, label_selector=selector)
        return [_to_dict(p) for p in pods.items]

    def track(self, client: Any, job: dict[str, Any], run_id: str) -> bool:
        """Step 3: mirror the Job into status; finish the run when the Job is done."""
        phase, reason, message = job_outcome(job)
        pods = self.job_pods(job)
        if phase == "Failed":
            text, _code = failure_message(reason, message, pods)
            self.finish_run(run_id, "FAILED")
            self.mlflow_reachable()
            self.fail(reason, text)
            return True
        if phase == "Succeeded":
            self.succeed(client, run_id)
            return True
        if any((p.get("status") or {}).get("phase") == "Running" for p in pods):
            phase, reason, message = "Running", "JobRunning", "the training pod is running"
        elif phase == "Pending":
            waiting = pending_reason(pods)
            if waiting:
                reason, message = waiting
        ready = get_condition(self.status.get("conditions"), "Ready") or {}
        if phase != self.phase or ready.get("reason") != reason:
            self.condition("Ready", False, reason, message)
            self.condition("Progressing", True, reason, message)
            self.patch(phase=phase, message=message[:1024])
            if phase == "Running":
                kopf.info(self.tr, reason="TrainingStarted", message=message)
        return False

    def finish_run(self, run_id: str, status: str) -> None:
        """End the MLflow run with ``status`` unless it has ended already."""
        with mlflow_errors(f"ending the MLflow run as {status}"):
            end_run(self.mlflow(), run_id, status)

    def resolve_source(self, client: Any, run_id: str) -> str:
        """``runs:/<id>/<path>`` when the run holds the model as artifacts, else the MLflow 3
        LoggedModel of that name (``models:/<model_id>``); fail when there is no model."""
        spec = self.spec
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

    def succeed(self, client: Any, run_id: str) -> None:
        """Metrics → status, run FINISHED, registry version and ModelVersion once each."""
        spec = self.spec
        with mlflow_errors("reading the run's results"):
            run = client.get_run(run_id)
            from ..tracking import run_metrics

            metrics = run_metrics(run)
            digest = run.data.tags.get(TAG_DATASET_DIGEST)
            end_run(client, run_id, "FINISHED")
        fields: dict[str, Any] = {"metrics": metrics}
        dataset = dict(self.status.get("dataset") or {})
        if digest:
            dataset["digest"] = digest
        if dataset:
            fields["dataset"] = dataset
        metric = primary_metric_name(spec)
        if metric:
            fields["primaryMetric"] = {
                "name": metric,
                **({"value": metrics[metric]} if metric in metrics else {}),
            }
        summary = "training succeeded"
        if registers(spec):
            try:
                with mlflow_errors("registering the model"):
                    source = self.resolve_source(client, run_id)
                    version = register_version(
                        client,
                        registered_model_name(spec),
                        source,
                        run_id,
                        key=self.uid,
                        tags={TAG_TRAININGRUN: f"{self.namespace}/{self.name}", TAG_UID: self.uid},
                    )
            except LookupError as exc:
                self.fail("NoModelLogged", f"training succeeded but {exc}")
                raise kopf.PermanentError(str(exc)) from exc
            failpoint("after-registered", self.key)
            mv_name = self.ensure_model_version(run_id, version.version)
            fields["modelVersion"] = {"version": str(version.version), "name": mv_name}
            summary = (
                f"training succeeded; registered {registered_model_name(spec)} "
                f"version {version.version} as ModelVersion {mv_name}"
            )
        self.mlflow_reachable()
        self.condition("Ready", True, "Succeeded", summary)
        self.condition("Progressing", False, "Completed", summary)
        self.patch(phase="Succeeded", completionTime=now_iso(), message=summary, **fields)
        kopf.info(self.tr, reason="TrainingSucceeded", message=summary)
        observe_stage("training", "success", _seconds_since(self.status.get("startTime")))

    def ensure_model_version(self, run_id: str, version: str | int) -> str:
        """Create the ModelVersion resource if absent; its name."""
        from kubernetes.client import CustomObjectsApi

        manifest = build_model_version(
            self.name, self.namespace, self.uid, self.spec, run_id, version
        )
        api = CustomObjectsApi(api_client())
        name = manifest["metadata"]["name"]
        for attempt in (0, 1):
            try:
                api.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "modelversions", manifest
                )
                kopf.info(
                    self.tr,
                    reason="ModelVersionCreated",
                    message=f"ModelVersion {name} for version {version}",
                )
                return name
            except Exception as exc:
                if not _is_status(exc, 409):
                    raise
            existing = api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "modelversions", name
            )
            refs = (existing.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == self.uid for ref in refs):
                return name  # ours, from before a restart
            other = existing.get("spec") or {}
            if other.get("model") == manifest["spec"]["model"] and str(
                other.get("version")
            ) == str(version):
                kopf.warn(
                    self.tr,
                    reason="ModelVersionExists",
                    message=f"ModelVersion {name} for version {version} already exists and was "
                    "not created by this TrainingRun; it validates the version instead",
                )
                return name
            if attempt == 0:
                # the name is taken by an unrelated object: a deterministic alternative
                kopf.warn(
                    self.tr,
                    reason="ModelVersionNameTaken",
                    message=f"ModelVersion {name} exists for another model/version; "
                    f"using {name}-{self.uid[:5]}",
                )
                name = f"{name}-{self.uid[:5]}"
                manifest["metadata"]["name"] = name
        raise kopf.PermanentError(f"ModelVersion names {name} are taken by other objects")


def read_trainingrun(namespace: str, name: str) -> dict[str, Any] | None:
    """The TrainingRun as the API has it now (None when it is gone)."""
    from kubernetes.client import CustomObjectsApi

    try:
        return CustomObjectsApi(api_client()).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except Exception as exc:
        if _is_status(exc, 404):
            return None
        raise


def _active(status: Mapping[str, Any] | None, **_: Any) -> bool:
    return (status or {}).get("phase") not in TERMINAL


async def _sleep(stopped: Any, waker: asyncio.Event, seconds: float) -> None:
    """Sleep until the timeout, the daemon is stopped, or the Job changes."""
    tasks = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(waker.wait())}
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


@kopf.daemon(GROUP, VERSION, PLURAL, when=_active, backoff=5, cancellation_timeout=30)
async def train(name: str, namespace: str, uid: str, stopped: Any, logger: Any, **_: Any) -> None:
    """Drive one TrainingRun until it is terminal (see the module docstring)."""
    cfg = get_settings()
    waker = _wakers.setdefault(uid, asyncio.Event())
    try:
        while not stopped:
            waker.clear()
            tr = await asyncio.to_thread(read_trainingrun, namespace, name)
            meta = (tr or {}).get("metadata") or {}
            if tr is None or meta.get("uid") != uid or meta.get("deletionTimestamp"):
                return
            if await asyncio.to_thread(TrainingRunReconciler(tr, cfg, logger).reconcile):
                return
            await _sleep(stopped, waker, cfg.resync_seconds)
    finally:
        _wakers.pop(uid, None)


@kopf.on.event(
    "batch", "v1", "jobs", labels={MANAGED_BY: OPERATOR, LABEL_TRAININGRUN: kopf.PRESENT}
)
async def job_changed(body: Mapping[str, Any], **_: Any) -> None:
    """Wake the owning TrainingRun's daemon when its Job changes (no waiting for a resync)."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "TrainingRun":
            waker = _wakers.get(ref.get("uid", ""))
            if waker is not None:
                waker.set()


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete(
    name: str,
    namespace: str,
    uid: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    retry: int,
    logger: Any,
    **_: Any,
) -> None:
    """Delete the Job (and, by propagation, its pods); end a running MLflow run as KILLED."""
    from kubernetes.client import BatchV1Api, V1DeleteOptions

    jname = status.get("jobName") or job_name(name)
    try:
        BatchV1Api(api_client()).delete_namespaced_job(
            jname, namespace, body=V1DeleteOptions(propagation_policy="Background")
        )
    except Exception as exc:
        if not _is_status(exc, 404):
            raise
    if status.get("phase") in TERMINAL:
        return  # the run was ended when the phase was set
    cfg = get_settings()
    try:
        with mlflow_errors("ending the MLflow run of a deleted TrainingRun", delay=5):
            client = make_client(cfg.mlflow_tracking_uri, cfg.mlflow_request_timeout)
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
