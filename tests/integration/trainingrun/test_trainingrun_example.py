"""The iris example end to end: Job on the node stand-in, one MLflow run, a registered version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from trhelpers import EXAMPLE, Kube, poll, runs_of, versions_of

pytestmark = pytest.mark.integration


def test_example_succeeds_with_one_run_one_version_and_a_modelversion(
    node: Any, operator: Any, kube: Kube, mlflow_client: Any, kubectl: Any, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    tr = kube.wait_terminal("iris-train-1")
    status = tr["status"]
    assert status["phase"] == "Succeeded", status
    uid = tr["metadata"]["uid"]

    # the Job: deterministic name, owner, labels, MLflow env, the user's settings
    job = kube.get("job", "iris-train-1-train")
    assert status["jobName"] == "iris-train-1-train"
    assert job["metadata"]["ownerReferences"][0]["uid"] == uid
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "mlops-operator"
    assert labels["mlops.dev/trainingrun"] == "iris-train-1"
    assert labels["mlops.dev/model"] == "iris"
    pod_spec = job["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_RUN_ID"] == status["mlflowRunId"]
    assert env["MLFLOW_EXPERIMENT_NAME"] == "iris"
    assert env["MLFLOW_TRACKING_URI"] == operator.tracking_uri
    assert json.loads(env["MLOPS_PARAMS"])["n_estimators"] == "50"
    assert container["command"] == ["mlops-runtime", "train"]
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert job["spec"]["activeDeadlineSeconds"] == 600 and job["spec"]["backoffLimit"] == 1

    # exactly one MLflow run, with params, metrics, model, dataset digest and tags
    (run,) = runs_of(mlflow_client, namespace, "iris-train-1")
    assert run.info.run_id == status["mlflowRunId"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.dev/uid"] == uid
    assert run.data.tags["mlops.dev/dataset-uri"] == "sklearn://iris"
    assert run.data.tags["mlops.dev/dataset-version"] == "2024-01"
    assert run.data.params["n_estimators"] == "50"
    assert run.data.params["model_type"] == "random_forest"
    assert run.data.metrics["accuracy"] > 0.8
    assert {"accuracy_class_setosa", "recall_class_virginica", "f1_macro"} <= set(run.data.metrics)
    digest = run.data.tags["mlops.dev/dataset-digest"]
    assert digest.startswith("md5:")
    (ds_input,) = run.inputs.dataset_inputs
    assert ds_input.dataset.digest == digest.removeprefix("md5:")
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in artifacts
    histograms = json.loads(
        Path(
            mlflow_client.download_artifacts(run.info.run_id, "baseline/histograms.json")
        ).read_text()
    )
    assert len(histograms["features"]) == 4
    assert all(sum(f["counts"]) == histograms["n_rows"] for f in histograms["features"])

    # status mirrors the run
    assert status["metrics"]["accuracy"] == pytest.approx(run.data.metrics["accuracy"])
    assert status["primaryMetric"]["name"] == "accuracy"
    assert status["dataset"]["digest"] == digest
    assert status["startTime"] and status["completionTime"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"

    # one registry version, one ModelVersion resource owned by the run, gates copied
    (version,) = versions_of(mlflow_client, "iris", uid)
    assert version.run_id == run.info.run_id
    assert status["modelVersion"] == {
        "version": version.version,
        "name": f"iris-v{version.version}",
    }
    mv = kube.get("modelversion", f"iris-v{version.version}")
    assert mv["spec"]["model"] == "iris" and mv["spec"]["version"] == version.version
    assert mv["metadata"]["ownerReferences"][0]["uid"] == uid
    assert mv["metadata"]["labels"]["mlops.dev/trainingrun"] == "iris-train-1"
    assert mv["spec"]["validation"]["slices"][0]["prefix"] == "accuracy_class_"
    assert mv["spec"]["promote"] == {"alias": "champion", "mode": "Auto", "force": False}

    # kubectl get tr columns
    out = kubectl("get", "tr", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "PHASE", "RUN", "METRIC", "VALUE", "AGE"]
    assert row.split()[:5] == ["iris-train-1", "iris", "Succeeded", run.info.run_id, "accuracy"]

    # the stage metric
    metrics = poll(
        "training stage metric",
        lambda: [
            line
            for line in operator.metrics().splitlines()
            if line.startswith('mlops_stage_total{result="success",stage="training"}')
        ],
    )
    assert float(metrics[0].split()[-1]) >= 1

    # for the record (visible with -s): what a user sees
    print(kubectl("get", "tr,mv", "-n", namespace, "-o", "wide").stdout)
    print(
        f"MLflow run {run.info.run_id} {run.info.status} params={run.data.params} "
        f"metrics={ {k: round(v, 3) for k, v in sorted(run.data.metrics.items())} }"
    )

    # events tell the story
    reasons = {e["reason"] for e in kube.events("iris-train-1")}
    assert {"RunCreated", "JobCreated", "TrainingSucceeded"} <= reasons
