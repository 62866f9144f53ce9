"""Pure builders of the ModelVersion controller: the validation Job and Job/pod readers."""

from __future__ import annotations

from mlops_operator.api import ValidationJob
from mlops_operator.builders.jobs import job_outcome, pod_termination_message
from mlops_operator.builders.modelversion import (
    build_validation_job,
    validation_job_key,
    validation_job_name,
)


def test_validation_job_defaults_to_the_evaluator() -> None:
    job = build_validation_job(
        mv_name="iris-v3", namespace="ml", uid="u-1", model="iris", version="3", run_id="r1",
        job=ValidationJob(image="ghcr.io/x/runtime:1", dataset="sklearn://iris"),
        tracking_uri="http://mlflow:5000", generation=4,
    )
    key = validation_job_key("iris", "3", ValidationJob(image="ghcr.io/x/runtime:1",
                                                        dataset="sklearn://iris"))
    assert job["metadata"]["name"] == f"iris-v3-validate-{key}"
    assert job["metadata"]["annotations"] == {"mlops.dev/generation": "4"}
    assert job["metadata"]["labels"]["mlops.dev/modelversion"] == "iris-v3"
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ModelVersion", "iris-v3", "u-1", True)
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "mlops_runtime.evaluate"] and "args" not in c
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_RUN_ID": "r1",
                   "MLOPS_MODEL_URI": "models:/iris/3", "MODEL_URI": "models:/iris/3",
                   "DATASET_URI": "sklearn://iris"}


def test_validation_job_custom_command_and_long_name() -> None:
    job = build_validation_job(
        mv_name="x" * 63, namespace="ml", uid="u-2", model="m", version="1", run_id=None,
        job=ValidationJob(image="img", command=["eval"], args=["--fast"]), tracking_uri="u",
    )
    assert len(job["metadata"]["name"]) <= 63
    key = validation_job_key("m", "1", ValidationJob(image="img", command=["eval"],
                                                     args=["--fast"]))
    assert validation_job_name("x" * 63, key) == job["metadata"]["name"]
    assert job["metadata"]["labels"]["mlops.dev/modelversion"] == "x" * 63
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["eval"] and c["args"] == ["--fast"]


def test_the_validation_job_is_keyed_by_what_its_result_depends_on() -> None:
    base = ValidationJob(image="img", dataset="sklearn://iris")
    key = validation_job_key("m", "1", base)
    assert key == validation_job_key("m", "1", ValidationJob(image="img", dataset="sklearn://iris"))
    others = {
        validation_job_key("m", "2", base),
        validation_job_key("n", "1", base),
        validation_job_key("m", "1", ValidationJob(image="img", dataset="sklearn://wine")),
        validation_job_key("m", "1", ValidationJob(image="img2", dataset="sklearn://iris")),
        validation_job_key("m", "1", ValidationJob(image="img", dataset="sklearn://iris",
                                                   args=["--target", "y"])),
    }
    assert key not in others and len(others) == 5


def test_a_long_modelversion_name_is_a_valid_label_value() -> None:
    job = build_validation_job(
        mv_name="a" * 200, namespace="ml", uid="u", model="m", version="1", run_id=None,
        job=ValidationJob(image="img"), tracking_uri="u",
    )
    value = job["metadata"]["labels"]["mlops.dev/modelversion"]
    assert len(value) <= 63 and len(job["metadata"]["name"]) <= 63
    assert job["spec"]["template"]["metadata"]["labels"]["mlops.dev/modelversion"] == value


def test_job_outcome_and_termination_message() -> None:
    assert job_outcome({"status": {}})[0] == "Pending"
    assert job_outcome({"status": {"conditions": [{"type": "Failed", "status": "True"}]}})[0] == "Failed"
    assert job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] == "Succeeded"
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": 1, "reason": "Error", "message": "evaluation failed: boom\n"}}}]}}
    assert pod_termination_message(pod) == "evaluation failed: boom"
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 2,
                                                                       "reason": "Error"}}}]}}
    assert pod_termination_message(pod) == "Error (exit code 2)"


def test_validation_pods_meet_the_restricted_pod_security_standard() -> None:
    from mlops_operator.builders.common import (
        restricted_pod_security_context,
        restricted_security_context,
    )

    job = build_validation_job(
        mv_name="iris-v3", namespace="ml", uid="u", model="iris", version="3", run_id=None,
        job=ValidationJob(image="img"), tracking_uri="u",
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == restricted_pod_security_context()
    assert pod["containers"][0]["securityContext"] == restricted_security_context()
