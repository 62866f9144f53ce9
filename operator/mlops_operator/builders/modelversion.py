"""Pure builders of a ModelVersion's children: the validation Job, and the checks as status."""

from __future__ import annotations

from typing import Any

from ..api import Check, ValidationJob
from .common import (
    LABEL_MODELVERSION,
    MANAGED_BY_LABELS,
    child_name,
    owner_reference,
    restricted_pod_security_context,
    restricted_security_context,
)

#: The runtime image's holdout evaluator (``mlops-runtime evaluate``).
DEFAULT_EVALUATE_COMMAND = ("python", "-m", "mlops_runtime.evaluate")
CONTAINER = "validate"


def validation_job_name(mv_name: str) -> str:
    """Deterministic name of a ModelVersion's validation Job (≤ 63 characters)."""
    return child_name(mv_name, "validate")


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
) -> dict[str, Any]:
    """The ``batch/v1`` Job that evaluates ``model`` version ``version`` and logs into ``run_id``,
    owned by the ModelVersion."""
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
    labels = {**MANAGED_BY_LABELS, LABEL_MODELVERSION: mv_name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": validation_job_name(mv_name),
            "namespace": namespace,
            "labels": labels,
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
