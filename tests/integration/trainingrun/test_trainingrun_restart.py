"""The operator killed at each step and restarted: still one run, one Job, one version, one MV."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from trhelpers import Kube, poll, runs_of, training_run, versions_of

pytestmark = pytest.mark.integration

STEPS = ("after-run-created", "before-job-created", "after-job-created", "after-registered")


def run_until_failpoint(operator: Any, point: str, target: str) -> None:
    """(Re)start the operator with a failpoint scoped to ``target`` and wait until it died there.

    The failpoint may fire before the operator's /metrics answers, which makes the fixture's
    start raise: that is expected here.
    """
    from mlops_localstack.procs import ComponentExited

    with contextlib.suppress(ComponentExited):
        operator.restart(MLOPS_FAILPOINT=f"{point}@{target}")
    poll(f"the operator to exit at {point}", lambda: not operator.alive(), timeout=180)
    assert f"failpoint {point} reached" in operator.logs()


def test_killed_after_each_step_still_one_run_one_job_one_version(
    node: Any, operator: Any, kube: Kube, mlflow_client: Any, namespace: str
) -> None:
    model = f"restart-{namespace[-5:]}"
    target = f"{namespace}/phoenix"
    operator.stop()
    kube.apply(
        training_run(
            "phoenix",
            model=model,
            params={"model_type": "decision_tree"},
            register={"validation": {"metrics": [{"name": "accuracy", "min": 0.5}]}},
        )
    )
    for point in STEPS:
        run_until_failpoint(operator, point, target)
        status = kube.tr("phoenix").get("status") or {}
        if point == "after-run-created":  # the run exists, but is not in status yet
            assert len(runs_of(mlflow_client, namespace, "phoenix")) == 1
            assert "mlflowRunId" not in status
        if point == "before-job-created":  # the status names a Job that does not exist yet
            assert status["jobName"] == "phoenix-train" and status["mlflowRunId"]
            assert kube.get("jobs") == []
        if point == "after-job-created":  # the Job exists (found missing, created again)
            assert len(kube.get("jobs")) == 1
            assert status["jobName"] == "phoenix-train"
        if point == "after-registered":  # the version exists, the ModelVersion not yet
            uid = kube.tr("phoenix")["metadata"]["uid"]
            assert len(versions_of(mlflow_client, model, uid)) == 1
            assert kube.get("modelversions") == []
            assert status["phase"] != "Succeeded"

    operator.restart()
    tr = kube.wait_terminal("phoenix")
    assert tr["status"]["phase"] == "Succeeded", tr["status"]
    uid = tr["metadata"]["uid"]
    (run,) = runs_of(mlflow_client, namespace, "phoenix")
    assert run.info.run_id == tr["status"]["mlflowRunId"] and run.info.status == "FINISHED"
    (job,) = kube.get("jobs")
    assert job["metadata"]["name"] == "phoenix-train"
    assert len(kube.get("pods")) == 1  # trained once
    (version,) = versions_of(mlflow_client, model, uid)
    (mv,) = kube.get("modelversions")
    assert mv["metadata"]["name"] == f"{model}-v{version.version}"
    assert tr["status"]["modelVersion"]["version"] == version.version
