"""Bad input ends in a clear Failed status and a Warning Event, never a silent Pending."""

from __future__ import annotations

from typing import Any

import pytest
from trhelpers import Kube, condition, poll, runs_of, training_run

pytestmark = pytest.mark.integration


def test_bad_param_bad_uri_missing_data_and_deadline_each_fail_clearly(
    node: Any, operator: Any, kube: Kube, mlflow_client: Any, namespace: str
) -> None:
    cases = {
        "bad-param": training_run("bad-param", params={"C": "-1"}),
        "bad-uri": training_run("bad-uri", dataset={"uri": "nosuch://bucket/iris.csv"}),
        "no-data": training_run("no-data", dataset={"uri": "file:///nonexistent/iris.csv"}),
        "too-slow": training_run(
            "too-slow", params={"sleep_seconds": "300"}, activeDeadlineSeconds=2
        ),
    }
    for manifest in cases.values():
        kube.apply(manifest)
    done = {name: kube.wait_terminal(name) for name in cases}

    for name, tr in done.items():
        status = tr["status"]
        assert status["phase"] == "Failed", (name, status)
        ready = condition(tr, "Ready")
        assert ready["status"] == "False"
        assert status["completionTime"]
        (run,) = runs_of(mlflow_client, namespace, name)
        assert run.info.status == "FAILED", name
        assert run.info.run_id == status["mlflowRunId"]
        warnings = [e for e in kube.events(name) if e["type"] == "Warning"]
        assert any(e["reason"] == "TrainingFailed" for e in warnings), (name, warnings)
        assert kube.get("modelversions") == []

    bad_param = condition(done["bad-param"], "Ready")
    assert bad_param["reason"] == "BackoffLimitExceeded"
    assert "exited with code 1" in bad_param["message"]
    assert "'C' parameter of LogisticRegression" in bad_param["message"]

    bad_uri = condition(done["bad-uri"], "Ready")
    assert "exited with code 2" in bad_uri["message"]
    assert "unknown dataset URI scheme 'nosuch'" in bad_uri["message"]

    no_data = condition(done["no-data"], "Ready")
    assert "exited with code 2" in no_data["message"]
    assert "dataset 'file:///nonexistent/iris.csv' not found" in no_data["message"]

    too_slow = condition(done["too-slow"], "Ready")
    assert too_slow["reason"] == "DeadlineExceeded", too_slow

    failures = poll(
        "training failure metric",
        lambda: [
            line
            for line in operator.metrics().splitlines()
            if line.startswith('mlops_stage_total{result="failure",stage="training"}')
        ],
    )
    assert float(failures[0].split()[-1]) >= 4


def test_mlflow_unreachable_waits_with_a_condition_and_no_job(
    node: Any,
    operator: Any,
    kube: Kube,
    mlflow_server: Any,
    mlflow_client: Any,
    namespace: str,
) -> None:
    mlflow_server.stop()
    try:
        kube.apply(training_run("waits", params={"sleep_seconds": "300"}))

        def unreachable() -> dict | None:
            tr = kube.tr("waits")
            cond = condition(tr, "MLflowReachable")
            return tr if cond.get("reason") == "MLflowUnreachable" else None

        tr = poll("MLflowReachable=False", unreachable, timeout=60)
        assert condition(tr, "MLflowReachable")["status"] == "False"
        assert tr["status"]["phase"] == "Pending"
        assert "MLflow unreachable" in condition(tr, "Ready")["message"]
        assert "mlflowRunId" not in tr["status"]
        assert kube.get("jobs") == []
        assert any(
            e["reason"] == "MLflowUnreachable" and e["type"] == "Warning"
            for e in kube.events("waits")
        )
    finally:
        mlflow_server.start()

    # once MLflow is back, the retry creates the run and only then the Job
    poll("the Job after MLflow is back", lambda: kube.get("jobs"), timeout=90)
    tr = kube.tr("waits")  # the Job's name was recorded with the run id, before the Job
    assert tr["status"]["jobName"] == "waits-train"
    assert condition(tr, "MLflowReachable")["status"] == "True"
    (run,) = runs_of(mlflow_client, namespace, "waits")
    assert run.info.run_id == tr["status"]["mlflowRunId"]
    assert len(kube.get("jobs")) == 1
    # the pass was retried as a temporary error (not a crash, not a permanent failure)
    assert f"TrainingRun {namespace}/waits: MLflow unreachable while creating the MLflow run" \
        in operator.logs()
    assert "reconcile failed" not in operator.logs()


def test_delete_removes_job_and_pods_and_kills_the_run_and_spec_is_immutable(
    node: Any, operator: Any, kube: Kube, mlflow_client: Any, kubectl: Any, namespace: str
) -> None:
    kube.apply(training_run("doomed", params={"sleep_seconds": "300"}))
    poll(
        "Running", lambda: kube.tr("doomed").get("status", {}).get("phase") == "Running", timeout=90
    )

    edit = kubectl(
        "patch",
        "tr",
        "doomed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"params": {"sleep_seconds": "1"}}}',
        check=False,
    )
    assert edit.returncode != 0
    assert "params is immutable once the run has started" in edit.stderr

    kubectl("delete", "tr", "doomed", "-n", namespace, "--wait=false")
    poll("TrainingRun gone", lambda: kube.get("trainingrun", "doomed") is None, timeout=60)
    poll("Job gone", lambda: kube.get("jobs") == [], timeout=60)
    poll("pods gone", lambda: kube.get("pods") == [], timeout=60)
    (run,) = runs_of(mlflow_client, namespace, "doomed")
    assert run.info.status == "KILLED"


def test_a_pod_that_cannot_start_is_pending_with_its_reason(
    node: Any, operator: Any, kube: Kube, kubectl: Any, namespace: str
) -> None:
    kube.apply(training_run("no-secret", envFrom=[{"secretRef": {"name": "s3-credentials"}}]))

    def waiting() -> dict | None:
        tr = kube.tr("no-secret")
        return tr if condition(tr, "Ready").get("reason") == "CreateContainerConfigError" else None

    tr = poll("the pod's waiting reason in Ready", waiting, timeout=90)
    assert tr["status"]["phase"] == "Pending"
    assert "s3-credentials" in condition(tr, "Ready")["message"]
    assert tr["status"]["mlflowRunId"] and tr["status"]["jobName"] == "no-secret-train"
