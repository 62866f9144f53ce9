"""Pure builders of a ModelVersion's children: the validation Job, and the checks as status."""

from __future__ import annotations

import json
from typing import Any

from ..api import Check, ValidationJob
from .common import (
    LABEL_MODELVERSION,
    MANAGED_BY_LABELS,
    child_name,
    label_value,
    owner_reference,
    restricted_pod_security_context,
    restricted_security_context,
    short_hash,
)

#: The runtime image's holdout evaluator (``mlops-runtime evaluate``).
DEFAULT_EVALUATE_COMMAND = ("python", "-m", "mlops_runtime.evaluate")
CONTAINER = "validate"
#: The generation of the ModelVersion that created a validation Job.
ANNOTATION_GENERATION = "mlops.dev/generation"


def validation_job_key(model: str, version: str, job: ValidationJob) -> str:
    """A hash of everything the validation Job's result depends on: the model version and the
    Job's spec (image, command, args, dataset). The gates are not in it: changing a threshold
    re-evaluates the gates on the same Job's metrics; changing the Job runs a new one."""
    spec = job.model_dump(by_alias=True, exclude_none=True)
    return short_hash(json.dumps([model, version, spec], sort_keys=True))


def validation_job_name(mv_name: str, key: str) -> str:
    """Deterministic name of a ModelVersion's validation Job for ``key`` (≤ 63 characters)."""
    return child_name(mv_name, f"validate-{key}")


def validation_job_selector(mv_name: str) -> str:
    """Label selector of every validation Job of the ModelVersion ``mv_name``."""
    return f"{LABEL_MODELVERSION}={label_value(mv_name)}"


def build_validation_job(
    *,
    mv_name: str,
    namespace: str,
    uid: str,
    model: str,
    version: str,
    run_id: str | None,
    job: ValidationJob,
    tracking_uri: str,
    generation: int | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that evaluates ``model`` version ``version`` and logs into ``run_id``,
    owned by the ModelVersion, named by :func:`validation_job_key` (``generation``: the
    ModelVersion's generation that created it, recorded as an annotation)."""
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
        "name": CONTAINER,
        "image": job.image,
        "command": list(job.command) if job.command else list(DEFAULT_EVALUATE_COMMAND),
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_security_context(),
    }
    if job.args:
        container["args"] = list(job.args)
    labels = {**MANAGED_BY_LABELS, LABEL_MODELVERSION: label_value(mv_name)}
    key = validation_job_key(model, version, job)
    annotations = {ANNOTATION_GENERATION: str(generation)} if generation is not None else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": validation_job_name(mv_name, key),
            "namespace": namespace,
            "labels": labels,
            **({"annotations": annotations} if annotations else {}),
            "ownerReferences": [owner_reference("ModelVersion", mv_name, uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [container],
                         "securityContext": restricted_pod_security_context()},
            },
        },
    }


def check_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    """Checks as status JSON (camelCase, None dropped)."""
    return [c.model_dump(by_alias=True, exclude_none=True) for c in checks]
