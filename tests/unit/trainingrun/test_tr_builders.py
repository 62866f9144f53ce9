"""The TrainingRun builders: Job and ModelVersion manifests, names, Job outcome parsing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mlops_operator.api import ModelVersionSpec, TrainingRunSpec
from mlops_operator.builders.common import label_value
from mlops_operator.builders.jobs import failure_message, job_outcome, pending_reason
from mlops_operator.builders.trainingrun import (
    build_job,
    build_model_version,
    experiment_name,
    job_name,
    model_version_name,
    primary_metric_name,
    run_tags,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "iris" / "trainingrun.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def example_spec(**changes: Any) -> TrainingRunSpec:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec.update(changes)
    return TrainingRunSpec.model_validate(spec)


def job(spec: TrainingRunSpec | None = None) -> dict[str, Any]:
    return build_job(
        "iris-train-1",
        "ml",
        "uid-1",
        spec or example_spec(),
        "run123",
        "http://mlflow:5000",
        "iris",
        "default/image:1",
    )


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_job_carries_mlflow_params_dataset_and_the_users_settings() -> None:
    manifest = job()
    assert manifest["metadata"]["name"] == "iris-train-1-train"
    assert manifest["metadata"]["namespace"] == "ml"
    env = env_of(manifest)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_RUN_ID"] == "run123"
    assert env["MLFLOW_EXPERIMENT_NAME"] == "iris"
    assert json.loads(env["MLOPS_PARAMS"]) == {
        "model_type": "random_forest",
        "n_estimators": "50",
        "max_depth": "4",
        "test_size": "0.3",
        "seed": "7",
    }
    assert env["PARAM_N_ESTIMATORS"] == "50"
    assert env["DATASET_URI"] == "sklearn://iris" and env["DATASET_VERSION"] == "2024-01"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 1 and spec["activeDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["mlops-runtime", "train"]
    assert container["args"] == ["--model", "iris"]
    assert container["image"] == "ghcr.io/mlops-operator/mlops-runtime:0.1.0"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


def test_job_defaults_the_command_and_passes_scheduling_fields() -> None:
    spec = example_spec(
        command=None,
        args=None,
        serviceAccountName="trainer",
        nodeSelector={"gpu": "yes"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        envFrom=[{"secretRef": {"name": "s3-creds"}}],
        activeDeadlineSeconds=None,
        dataset={
            "uri": "s3://b/iris.csv",
            "dvc": {"repo": "git@x:r.git", "path": "d.csv", "rev": "v2"},
        },
    )
    manifest = job(spec)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["mlops-runtime", "train"] and "args" not in container
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "activeDeadlineSeconds" not in manifest["spec"]
    env = env_of(manifest)
    assert (env["MLOPS_DVC_REPO"], env["MLOPS_DVC_PATH"], env["MLOPS_DVC_REV"]) == (
        "git@x:r.git",
        "d.csv",
        "v2",
    )


def test_user_env_cannot_override_the_run_id_but_can_the_tracking_uri() -> None:
    spec = example_spec(
        env=[
            {"name": "MLFLOW_RUN_ID", "value": "hijack"},
            {"name": "MLFLOW_TRACKING_URI", "value": "http://in-cluster:5000"},
        ]
    )
    manifest = job(spec)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    env = env_of(manifest)
    assert env["MLFLOW_RUN_ID"] == "run123"
    assert env["MLFLOW_TRACKING_URI"] == "http://in-cluster:5000"


def test_children_are_owned_and_labelled_without_argocd_tracking() -> None:
    manifest = job()
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingRun",
        "name": "iris-train-1",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "mlops-operator"
    assert labels["mlops.dev/trainingrun"] == "iris-train-1"
    assert labels["mlops.dev/model"] == "iris"
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    for labels_ in (labels, pod_labels):
        assert "app.kubernetes.io/instance" not in labels_
        assert not [k for k in labels_ if k.startswith("argocd.argoproj.io")]


def test_model_version_copies_the_gates_and_pins_the_version() -> None:
    spec = example_spec()
    mv = build_model_version("iris-train-1", "ml", "uid-1", spec, "run123", 7)
    assert mv["metadata"]["name"] == "iris-v7"
    assert mv["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert mv["metadata"]["labels"]["mlops.dev/run-id"] == "run123"
    parsed = ModelVersionSpec.model_validate(mv["spec"])
    assert parsed.version == "7" and parsed.source is None and parsed.model == "iris"
    assert parsed.validation == spec.register.validation
    assert parsed.promote == spec.register.promote
    assert mv["spec"]["tags"]["mlops.dev/trainingrun"] == "ml/iris-train-1"


def test_model_version_uses_register_model_name() -> None:
    spec = example_spec(register={"modelName": "Iris_Prod"})
    mv = build_model_version("t", "ml", "u", spec, "r", 3)
    assert mv["spec"]["model"] == "Iris_Prod"
    assert mv["metadata"]["name"] == "iris-prod-v3"
    assert "validation" not in mv["spec"]


def test_names_tags_and_primary_metric() -> None:
    spec = example_spec(experiment=None)
    assert experiment_name(spec) == "iris"
    assert primary_metric_name(spec) == "accuracy"
    assert primary_metric_name(example_spec(primaryMetric=None)) == "accuracy"  # first gate
    assert primary_metric_name(example_spec(primaryMetric=None, register=None)) is None
    tags = run_tags("ml", "t1", "u1", spec)
    assert tags["mlops.dev/trainingrun"] == "ml/t1" and tags["mlops.dev/uid"] == "u1"
    assert tags["mlops.dev/dataset-uri"] == "sklearn://iris"
    assert tags["mlops.dev/dataset-version"] == "2024-01"


@given(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,250}[a-z0-9])?", fullmatch=True))
def test_job_name_is_a_short_deterministic_dns_label(name: str) -> None:
    result = job_name(name.replace(".", "-"))
    assert len(result) <= 63 and DNS_LABEL.match(result)
    assert result == job_name(name.replace(".", "-"))
    assert result.endswith("-train")


def test_long_names_stay_distinct() -> None:
    a, b = "x" * 80 + "a", "x" * 80 + "b"
    assert job_name(a) != job_name(b)
    assert job_name("short") == "short-train"


@given(st.text(min_size=1, max_size=300))
def test_label_value_is_always_valid(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value)


def test_model_version_name_is_a_dns_subdomain() -> None:
    assert model_version_name("Iris_v2.model", "12") == "iris-v2.model-v12"


def _job(conditions: list[dict] | None = None, **status: Any) -> dict:
    return {"status": {"conditions": conditions or [], **status}}


@pytest.mark.parametrize(
    ("job_", "expected"),
    [
        (_job([{"type": "Complete", "status": "True"}]), ("Succeeded", "JobComplete")),
        (
            _job([{"type": "SuccessCriteriaMet", "status": "True"}], ready=0),
            ("Pending", "JobPending"),
        ),
        (
            _job(
                [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}],
                active=1,
                ready=1,
            ),
            ("Running", "JobRunning"),
        ),
        (
            _job(
                [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "Job was active longer than specified deadline",
                    }
                ]
            ),
            ("Failed", "DeadlineExceeded"),
        ),
        (_job(active=1, ready=0), ("Pending", "JobPending")),
    ],
)
def test_job_outcome(job_: dict, expected: tuple[str, str]) -> None:
    assert job_outcome(job_)[:2] == expected


def _pod(code: int, message: str, finished: str) -> dict:
    return {
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Error",
                            "message": message,
                            "finishedAt": finished,
                        }
                    }
                }
            ]
        }
    }


def test_failure_message_names_the_latest_failing_container() -> None:
    pods = [
        _pod(1, "old\nfirst try", "2024-01-01T00:00:00Z"),
        _pod(2, "noise\nmlops-runtime train: dataset error: nope", "2024-01-01T00:01:00Z"),
        _pod(0, "", "2024-01-01T00:02:00Z"),
    ]
    text, code = failure_message(
        "BackoffLimitExceeded", "Job has reached the backoff limit", pods, tail_lines=1
    )
    assert code == 2
    assert text == (
        "BackoffLimitExceeded: Job has reached the backoff limit; container "
        "'train' exited with code 2 (Error): mlops-runtime train: dataset error: "
        "nope"
    )
    assert failure_message("DeadlineExceeded", "", []) == ("DeadlineExceeded", None)


def test_pending_reason_explains_a_waiting_pod() -> None:
    waiting = {
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "s3" not found',
                        }
                    }
                }
            ]
        }
    }
    unschedulable = {
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available",
                }
            ]
        }
    }
    assert pending_reason([waiting]) == ("CreateContainerConfigError", 'secret "s3" not found')
    assert pending_reason([unschedulable]) == ("Unschedulable", "0/1 nodes are available")
    assert pending_reason([{"status": {"phase": "Pending"}}]) is None


def test_image_defaults_to_the_operators_training_image() -> None:
    (container,) = job(example_spec(image=None))["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "default/image:1"
    (container,) = job(example_spec(image="mine:2"))["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mine:2"


def test_training_pods_meet_the_restricted_pod_security_standard() -> None:
    from mlops_operator.builders.common import (
        restricted_pod_security_context,
        restricted_security_context,
    )

    job = build_job("tr", "ns", "uid", example_spec(), "run", "http://mlflow", "iris", "img")
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == restricted_pod_security_context()
    assert [c["securityContext"] for c in pod["containers"]] == [restricted_security_context()]
    assert restricted_security_context()["capabilities"] == {"drop": ["ALL"]}
