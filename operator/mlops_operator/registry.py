"""The MLflow Model Registry as the ModelVersion controller sees it: sources, metrics, aliases,
tags, and the serialized alias move.

Every function takes the operator's MLflow client (:mod:`mlops_operator.mlflow_rest`) and does
blocking I/O; the handlers call them from kopf's executor threads. Connection failures propagate for
:func:`mlflow_operator.mlflow_utils.mlflow_errors` to map to ``kopf.TemporaryError``; "does not
exist" is turned into :class:`SourceNotFound` (bad input, permanent).

Alias bookkeeping: whenever the operator moves an alias it also writes the registered-model tag
``mlops.dev/alias.<alias>`` = version (the *ledger*). An alias whose holder differs from the
ledger was moved by someone else (the MLflow UI, a script): the operator reports it and never
moves it back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import tracking
from .mlflow_rest import MlflowException
from .mlflow_utils import TAG_MODELVERSION, TAG_TRAININGRUN, is_not_found, register_version

if TYPE_CHECKING:
    from .mlflow_rest import MlflowRestClient as MlflowClient
    from .mlflow_rest import ModelVersion as MlflowModelVersion

TAG_VALIDATION = "mlops.dev/validation"
TAG_CHECKS = "mlops.dev/checks"
TAG_RUN_ID = "mlops.dev/run-id"
TAG_PREVIOUS_CHAMPION = "mlops.dev/previous-champion"
TAG_REJECTED_REASON = "mlops.dev/rejected-reason"
TAG_PROMOTED_BY = "mlops.dev/promoted-by"
TAG_PROMOTED_AT = "mlops.dev/promoted-at"
TAG_PROMOTED_ALIAS = "mlops.dev/promoted-alias"
TAG_ROLLBACK = "mlops.dev/rollback"
LEDGER_PREFIX = "mlops.dev/alias."


class SourceNotFound(Exception):
    """The source URI, run or version a ModelVersion names does not exist (permanent)."""


@dataclass(frozen=True)
class ResolvedSource:
    """What to register for a ``spec.source``: the artifact source, its run and logged model."""

    source: str
    run_id: str | None
    model_id: str | None = None


def parse_runs_uri(uri: str) -> tuple[str, str]:
    """``runs:/<run-id>/<path>`` → (run id, artifact path)."""
    rest = uri[len("runs:/"):].lstrip("/")
    run_id, _, path = rest.partition("/")
    return run_id, path.strip("/")


def resolve_source(client: MlflowClient, uri: str) -> ResolvedSource:
    """Check that ``uri`` exists and find what to register, as ``mlflow.register_model`` does.

    ``runs:/<id>/<path>``: the run must exist; the model is either run artifacts under
    ``<path>`` (MLflow 2) or a logged model named ``<path>`` of that run (MLflow 3).
    ``models:/<name>/<version>``: that version's source. Other artifact URIs are taken as is.
    """
    if uri.startswith("runs:/"):
        run_id, path = parse_runs_uri(uri)
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if is_not_found(exc) or getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
                raise SourceNotFound(f"source {uri}: run {run_id} does not exist") from exc
            raise
        models = [
            m
            for m in client.search_logged_models(
                experiment_ids=[run.info.experiment_id], filter_string=f"name = '{path}'"
            )
            if m.source_run_id == run_id
        ]
        if models:
            model = max(models, key=lambda m: m.creation_timestamp or 0)
            return ResolvedSource(source=f"models:/{model.model_id}", run_id=run_id,
                                  model_id=model.model_id)
        artifacts = client.list_artifacts(run_id, path) if path else []
        if any(a.path.endswith("MLmodel") for a in artifacts):  # MLflow 2 layout
            return ResolvedSource(source=run.info.artifact_uri.rstrip("/") + "/" + path,
                                  run_id=run_id)
        raise SourceNotFound(f"source {uri}: run {run_id} has no model at '{path}'")
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):]
        name, _, version = rest.partition("/")
        if version:
            try:
                mv = client.get_model_version(name, version)
            except MlflowException as exc:
                if is_not_found(exc):
                    raise SourceNotFound(f"source {uri}: model version not found") from exc
                raise
            return ResolvedSource(source=mv.source, run_id=mv.run_id)
        return ResolvedSource(source=uri, run_id=None, model_id=name or None)
    return ResolvedSource(source=uri, run_id=None)


def register(
    client: MlflowClient,
    model: str,
    uri: str,
    key: str,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> MlflowModelVersion:
    """Register ``uri`` as a version of ``model`` once per ``key`` (the ModelVersion's uid)."""
    from .mlflow_utils import find_registered_version

    existing = find_registered_version(client, model, key)
    if existing is not None:
        return existing
    resolved = resolve_source(client, uri)
    return register_version(
        client, model, resolved.source, resolved.run_id, key, dict(tags or {}),
        description=description, model_id=resolved.model_id,
    )


def get_version(client: MlflowClient, model: str, version: str) -> MlflowModelVersion:
    """A registry version, or :class:`SourceNotFound`."""
    try:
        return client.get_model_version(model, version)
    except MlflowException as exc:
        if is_not_found(exc):
            raise SourceNotFound(f"model {model} has no version {version}") from exc
        raise


def run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    """The latest value of every metric of ``run_id`` (empty when there is no run)."""
    if not run_id:
        return {}
    try:
        return tracking.run_metrics(client.get_run(run_id))
    except MlflowException as exc:
        if is_not_found(exc):
            return {}
        raise


def alias_holder(client: MlflowClient, model: str, alias: str) -> MlflowModelVersion | None:
    """The version holding ``alias``, or None (no such alias, or no such model)."""
    try:
        version = (client.get_registered_model(model).aliases or {}).get(alias)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise
    return None if version is None else client.get_model_version(model, str(version))


def ledger(client: MlflowClient, model: str, alias: str) -> str | None:
    """The version the operator last moved ``alias`` to (registered-model tag), or None."""
    try:
        return client.get_registered_model(model).tags.get(LEDGER_PREFIX + alias)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def set_tags(client: MlflowClient, model: str, version: str, tags: Mapping[str, str]) -> None:
    """Set several tags on a version (values truncated to MLflow's limit)."""
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, str(value)[:5000])


def lineage_tags(
    namespace: str, name: str, run_id: str | None, trainingrun: str | None
) -> dict[str, str]:
    """Lineage tags of a version: the ModelVersion, its MLflow run and TrainingRun."""
    tags = {TAG_MODELVERSION: f"{namespace}/{name}"}
    if run_id:
        tags[TAG_RUN_ID] = run_id
    if trainingrun:
        tags[TAG_TRAININGRUN] = f"{namespace}/{trainingrun}"
    return tags


def move_alias(
    client: MlflowClient,
    model: str,
    alias: str,
    version: str,
    tags: Mapping[str, str],
) -> None:
    """Point ``alias`` at ``version``, record it in the ledger, tag the version.

    Ordered so that a crash at any point is repaired by running it again: tags first, then
    the ledger, then the alias itself (the resync treats "ledger = version, alias elsewhere"
    as unfinished, not as an outside change, see :func:`alias_moved_externally`).
    """
    set_tags(client, model, version, tags)
    client.set_registered_model_tag(model, LEDGER_PREFIX + alias, version)
    client.set_registered_model_alias(model, alias, version)


def alias_moved_externally(holder: str | None, ledger_version: str | None) -> bool:
    """True when the alias is held by something else than what the operator last set."""
    return ledger_version is not None and holder != ledger_version


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@contextmanager
def model_lock(model: str) -> Iterator[None]:
    """Serialize promotions of one registered model inside this operator process.

    kopf runs the (sync) handlers of different objects in parallel executor threads; the
    operator is a single active process (kopf peering when replicated), so a per-model
    ``threading.Lock`` plus the re-read under it makes read-decide-move atomic.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(model, threading.Lock())
    with lock:
        yield
