"""MLflow experiments and runs for TrainingRuns: get-or-create, finish, read back.

Every function is safe to call again after a crash: the run of a TrainingRun is found by its
uid tag (:data:`~mlops_operator.mlflow_utils.TAG_UID`) before a new one is created, and ending a
run only touches runs that are still active.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .mlflow_rest import MlflowException, Param, Run, ViewType
from .mlflow_utils import TAG_UID

if TYPE_CHECKING:
    from .mlflow_rest import MlflowRestClient as MlflowClient

ACTIVE_STATUSES = ("RUNNING", "SCHEDULED")
TAG_DATASET_DIGEST = "mlops.dev/dataset-digest"
TAG_DATASET_URI = "mlops.dev/dataset-uri"
#: MLflow limits a param value to 6000 characters (500 on older servers).
MAX_PARAM = 500


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (or restored from deleted) when needed.

    Remembered per client (its ``experiment_ids``, when it has one): one lookup per experiment
    and process, not one per TrainingRun. :func:`create_run` forgets it when MLflow says the
    experiment is deleted or gone, and asks again.
    """
    cache: dict[str, str] | None = getattr(client, "experiment_ids", None)
    if cache is None:
        return _lookup_experiment(client, name)
    if name in cache:
        return cache[name]
    with client.experiment_lock:  # the first TrainingRuns of an experiment: one lookup, not 8
        if name not in cache:
            cache[name] = _lookup_experiment(client, name)
        return cache[name]


def forget_experiment(client: MlflowClient, experiment_id: str) -> str | None:
    """Drop ``experiment_id`` from the client's cache; its name, if it was cached."""
    cache: dict[str, str] | None = getattr(client, "experiment_ids", None)
    for name, cached in list((cache or {}).items()):
        if cached == str(experiment_id):
            cache.pop(name, None)  # type: ignore[union-attr]
            return name
    return None


def experiment_gone(exc: BaseException) -> bool:
    """MLflow refused a run because its experiment is deleted (INVALID_PARAMETER_VALUE "must be
    in the 'active' state") or does not exist any more (RESOURCE_DOES_NOT_EXIST)."""
    code = getattr(exc, "error_code", "")
    return isinstance(exc, MlflowException) and (
        code == "RESOURCE_DOES_NOT_EXIST"
        or (code == "INVALID_PARAMETER_VALUE" and "active" in str(exc) and "xperiment" in str(exc)))


def _lookup_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            assert exp is not None
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


def find_run(client: MlflowClient, experiment_id: str, uid: str) -> Run | None:
    """The run created earlier for the TrainingRun with ``uid`` (oldest, if ever several)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_UID}` = '{uid}'",
        run_view_type=ViewType.ALL,
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return runs[0] if runs else None


def create_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> Run:
    """Create the run with its tags and log ``params`` (the TrainingRun's hyperparameters).

    When the (cached) experiment was deleted or removed meanwhile, it is looked up again by
    name — restored or created — and the run made there.
    """
    try:
        run = client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
    except MlflowException as exc:
        name = forget_experiment(client, experiment_id) if experiment_gone(exc) else None
        if name is None:
            raise
        run = client.create_run(ensure_experiment(client, name), tags=dict(tags),
                                run_name=run_name)
    items = [Param(k, str(v)[:MAX_PARAM]) for k, v in sorted((params or {}).items())]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run


def ensure_run(
    client: MlflowClient,
    experiment_id: str,
    uid: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> tuple[Run, bool]:
    """``(run, created)``: the TrainingRun's run, found by its uid tag or created now."""
    existing = find_run(client, experiment_id, uid)
    if existing is not None:
        return existing, False
    return create_run(client, experiment_id, run_name, tags, params), True


def end_run(client: MlflowClient, run_id: str, status: str) -> bool:
    """End ``run_id`` with ``status`` (FINISHED, FAILED, KILLED) if it is still active.

    Returns whether it changed anything; an already ended run keeps the status it has.
    """
    run = client.get_run(run_id)
    if run.info.status not in ACTIVE_STATUSES:
        return False
    client.set_terminated(run_id, status)
    return True


def run_metrics(run: Run, limit: int = 256) -> dict[str, float]:
    """The run's latest metrics, finite values only, at most ``limit`` (sorted by name)."""
    metrics = {k: float(v) for k, v in run.data.metrics.items() if math.isfinite(float(v))}
    return dict(sorted(metrics.items())[:limit])
