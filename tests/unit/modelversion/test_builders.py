"""Pure builders of the ModelVersion controller: the validation Job and Job/pod readers."""

from __future__ import annotations

from mlops_operator.api import ValidationJob
from mlops_operator.evaluate import compute_metrics
from mlops_operator.handlers.modelversion import (
    build_validation_job,
    job_outcome,
    pod_termination_message,
    validation_job_name,
)


def test_validation_job_defaults_to_the_evaluator() -> None:
    job = build_validation_job(
        mv_name="iris-v3", namespace="ml", model="iris", version="3", run_id="r1",
        job=ValidationJob(image="ghcr.io/x/runtime:1", dataset="sklearn://iris"),
        tracking_uri="http://mlflow:5000",
    )
    assert job["metadata"]["name"] == "iris-v3-validate"
    assert job["metadata"]["labels"]["mlops.dev/modelversion"] == "iris-v3"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "mlops_operator.evaluate"] and "args" not in c
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_RUN_ID": "r1",
                   "MLOPS_MODEL_URI": "models:/iris/3", "MODEL_URI": "models:/iris/3",
                   "DATASET_URI": "sklearn://iris"}


def test_validation_job_custom_command_and_long_name() -> None:
    job = build_validation_job(
        mv_name="x" * 63, namespace="ml", model="m", version="1", run_id=None,
        job=ValidationJob(image="img", command=["eval"], args=["--fast"]), tracking_uri="u",
    )
    assert len(job["metadata"]["name"]) <= 63
    assert validation_job_name("x" * 63) == job["metadata"]["name"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["eval"] and c["args"] == ["--fast"]


def test_job_outcome_and_termination_message() -> None:
    assert job_outcome({"status": {}}) is None
    assert job_outcome({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"
    assert job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Complete"
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": 1, "reason": "Error", "message": "evaluation failed: boom\n"}}}]}}
    assert pod_termination_message(pod) == "evaluation failed: boom"
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 2,
                                                                       "reason": "Error"}}}]}}
    assert pod_termination_message(pod) == "Error (exit code 2)"


def test_evaluator_metrics() -> None:
    m = compute_metrics([0, 0, 1, 1], [0, 1, 1, 1], "holdout_")
    assert m["holdout_accuracy"] == 0.75
    assert m["holdout_accuracy_class_0"] == 0.5 and m["holdout_accuracy_class_1"] == 1.0
    assert 0 < m["holdout_f1_macro"] < 1
