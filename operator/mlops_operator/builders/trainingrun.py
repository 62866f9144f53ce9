"""Pure builders for a TrainingRun's children: the training Job and the ModelVersion.

No I/O here: a spec (the pydantic model) and a few identifiers go in, a manifest dict comes out.
Names are deterministic so that a retry or a restarted operator finds the child it created
before instead of creating a second one. Owner references are written here (not with
``kopf.adopt``, which would also copy the owner's labels — Argo CD's tracking label among
them — onto the children).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .. import API_VERSION
from ..api import ModelVersionSpec, TrainingRunSpec
from .common import (
    LABEL_COMPONENT,
    LABEL_MODEL,
    LABEL_RUN_ID,
    LABEL_TRAININGRUN,
    MANAGED_BY,
    MAX_NAME,
    OPERATOR,
    label_value,
    owner_reference,
    restricted_pod_security_context,
    restricted_security_context,
    truncate,
)

#: The container of the training pod (its exit code and message end up in the status).
CONTAINER = "train"
DEFAULT_COMMAND = ("mlops-runtime", "train")
#: Env vars the operator owns; a TrainingRun's own ``env`` cannot override them.
RESERVED_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLOPS_PARAMS")


def job_name(tr_name: str) -> str:
    """``<tr>-train``; long names are shortened with a hash so the result fits in 63 chars."""
    return truncate(tr_name, MAX_NAME, "-train")


def model_version_name(model: str, version: str | int) -> str:
    """``<model>-v<version>`` as a DNS subdomain (lower case, ``_`` → ``-``)."""
    base = re.sub(r"[^a-z0-9.-]", "-", model.lower()).strip("-.") or "model"
    return truncate(base, 253, f"-v{version}")


def experiment_name(spec: TrainingRunSpec) -> str:
    """The MLflow experiment: ``spec.experiment``, else the model name."""
    return spec.experiment or spec.model


def registered_model_name(spec: TrainingRunSpec) -> str:
    """The registry name the run's model is registered under."""
    if spec.register is not None and spec.register.model_name:
        return spec.register.model_name
    return spec.model


def registers(spec: TrainingRunSpec) -> bool:
    """Whether a successful run registers a ModelVersion."""
    return spec.register is not None and spec.register.enabled


def model_source(run_id: str, spec: TrainingRunSpec) -> str:
    """``runs:/<run_id>/<artifact path>`` of the trained model."""
    path = spec.register.artifact_path if spec.register is not None else "model"
    return f"runs:/{run_id}/{path}"


def primary_metric_name(spec: TrainingRunSpec) -> str | None:
    """``spec.primaryMetric``, else the first validation metric gate, else None."""
    if spec.primary_metric:
        return spec.primary_metric
    if spec.register and spec.register.validation and spec.register.validation.metrics:
        return spec.register.validation.metrics[0].name
    return None


def build_labels(tr_name: str, model: str) -> dict[str, str]:
    """Labels of every child of a TrainingRun."""
    return {
        MANAGED_BY: OPERATOR,
        LABEL_TRAININGRUN: label_value(tr_name),
        LABEL_MODEL: label_value(model),
    }


def run_tags(namespace: str, tr_name: str, uid: str, spec: TrainingRunSpec) -> dict[str, str]:
    """Tags of the MLflow run: the TrainingRun, its uid (idempotency key), model and dataset."""
    tags = {
        "mlops.dev/trainingrun": f"{namespace}/{tr_name}",
        "mlops.dev/uid": uid,
        "mlops.dev/model": spec.model,
        "mlflow.runName": tr_name,
    }
    ds = spec.dataset
    if ds is not None:
        tags["mlops.dev/dataset-uri"] = ds.uri
        if ds.version:
            tags["mlops.dev/dataset-version"] = ds.version
        if ds.dvc is not None:
            tags["mlops.dev/dvc-repo"] = ds.dvc.repo
            tags["mlops.dev/dvc-path"] = ds.dvc.path
            if ds.dvc.rev:
                tags["mlops.dev/dvc-rev"] = ds.dvc.rev
    return tags


def param_env_name(name: str) -> str:
    """``PARAM_<NAME>``: upper case, anything but letters and digits as ``_``."""
    return "PARAM_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def build_env(
    tr_name: str,
    namespace: str,
    spec: TrainingRunSpec,
    run_id: str,
    tracking_uri: str,
    experiment: str,
) -> list[dict[str, Any]]:
    """The training container's env: MLflow, params, dataset, then the user's own env."""
    env = [
        _env("MLFLOW_TRACKING_URI", tracking_uri),
        _env("MLFLOW_RUN_ID", run_id),
        _env("MLFLOW_EXPERIMENT_NAME", experiment),
        _env("MLOPS_TRAININGRUN", f"{namespace}/{tr_name}"),
        _env("MLOPS_MODEL_NAME", spec.model),
        _env("MLOPS_PARAMS", json.dumps(dict(sorted((spec.params or {}).items())))),
    ]
    env += [_env(param_env_name(k), v) for k, v in sorted((spec.params or {}).items())]
    ds = spec.dataset
    if ds is not None:
        env.append(_env("DATASET_URI", ds.uri))
        if ds.version:
            env.append(_env("DATASET_VERSION", ds.version))
        if ds.dvc is not None:
            env += [_env("MLOPS_DVC_REPO", ds.dvc.repo), _env("MLOPS_DVC_PATH", ds.dvc.path)]
            if ds.dvc.rev:
                env.append(_env("MLOPS_DVC_REV", ds.dvc.rev))
    own = {e["name"] for e in env}
    for var in spec.env or []:
        if var.name in RESERVED_ENV:
            continue
        if var.name in own:  # the user's value wins (e.g. an in-cluster MLFLOW_TRACKING_URI)
            env = [e for e in env if e["name"] != var.name]
        env.append(var.to_k8s())
    return env


def build_job(
    tr_name: str,
    namespace: str,
    uid: str,
    spec: TrainingRunSpec,
    run_id: str,
    tracking_uri: str,
    experiment: str,
    default_image: str | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that trains one TrainingRun into MLflow run ``run_id``."""
    labels = build_labels(tr_name, spec.model)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or default_image,
        "command": list(spec.command) if spec.command else list(DEFAULT_COMMAND),
        "env": build_env(tr_name, namespace, spec, run_id, tracking_uri, experiment),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_security_context(),
    }
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env_from:
        container["envFrom"] = [e.to_k8s() for e in spec.env_from]
    if spec.resources is not None:
        container["resources"] = spec.resources.to_k8s()
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container],
                                "securityContext": restricted_pod_security_context()}
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in spec.tolerations]
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "template": {
            "metadata": {"labels": {**labels, LABEL_COMPONENT: "training"}},
            "spec": pod_spec,
        },
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(tr_name),
            "namespace": namespace,
            "labels": {**labels, LABEL_COMPONENT: "training"},
            "annotations": {"mlops.dev/mlflow-run-id": run_id},
            "ownerReferences": [owner_reference("TrainingRun", tr_name, uid)],
        },
        "spec": job_spec,
    }


def build_model_version(
    tr_name: str,
    namespace: str,
    uid: str,
    spec: TrainingRunSpec,
    run_id: str,
    version: str | int,
) -> dict[str, Any]:
    """The ModelVersion resource for registry version ``version`` trained by this run.

    It pins the version (``spec.version``) that the TrainingRun registered, and carries the
    validation gates and promotion of ``spec.register``; the ModelVersion controller runs them.
    """
    model = registered_model_name(spec)
    register = spec.register
    mv_spec: dict[str, Any] = {
        "model": model,
        "version": str(version),
        "description": f"Trained by TrainingRun {namespace}/{tr_name} (MLflow run {run_id}).",
        "tags": {
            "mlops.dev/trainingrun": f"{namespace}/{tr_name}",
            "mlops.dev/run-id": run_id,
        },
    }
    if register is not None and register.validation is not None:
        mv_spec["validation"] = register.validation.to_k8s()
    if register is not None and register.promote is not None:
        mv_spec["promote"] = register.promote.to_k8s()
    ModelVersionSpec.model_validate(mv_spec)  # fail here, not at the apiserver
    labels = {**build_labels(tr_name, model), LABEL_RUN_ID: label_value(run_id)}
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": model_version_name(model, version),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference("TrainingRun", tr_name, uid)],
        },
        "spec": mv_spec,
    }
