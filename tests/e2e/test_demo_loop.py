"""The demo loop, end to end, on a `LocalStack` of its own — what `make demo` does.

Control plane + node stand-in + MLflow + the operator as a process: apply the iris
TrainingRun example, and the model gets trained, tracked, registered, validated and promoted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_localstack.cluster import Cluster
from mlops_localstack.stack import LocalStack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    st = LocalStack(tmp_path_factory.mktemp("stack")).start()
    try:
        yield st
    finally:
        st.stop()


def test_iris_example_is_trained_registered_validated_and_promoted(stack: LocalStack) -> None:
    state = stack.state
    cluster = Cluster(Path(state["kubeconfig"]), kubectl_path=state["kubectl"], kind="local")
    cluster.kubectl("create", "namespace", "demo")
    cluster.kubectl("apply", "-n", "demo", "-f", str(REPO / "examples/iris/trainingrun.yaml"))

    def tr() -> dict:
        return json.loads(cluster.kubectl("get", "tr", "iris-train-1", "-n", "demo", "-o",
                                          "json").stdout)

    phase = cluster.wait_for(
        "the TrainingRun to finish",
        lambda: tr().get("status", {}).get("phase") in ("Succeeded", "Failed")
        and tr()["status"]["phase"],
        timeout=300,
    )
    status = tr()["status"]
    assert phase == "Succeeded", json.dumps(status, indent=2)
    run_id = status["mlflowRunId"]
    assert status["metrics"]["accuracy"] > 0.8

    mv_name = cluster.wait_for(
        "the ModelVersion", lambda: (tr()["status"].get("modelVersion") or {}).get("name"),
        timeout=60,
    )

    def mv() -> dict:
        return json.loads(cluster.kubectl("get", "mv", mv_name, "-n", "demo", "-o",
                                          "json").stdout)

    cluster.wait_for(
        "the ModelVersion to be promoted",
        lambda: mv().get("status", {}).get("phase") in ("Promoted", "Rejected", "Failed"),
        timeout=180,
    )
    mv_status = mv()["status"]
    assert mv_status["phase"] == "Promoted", json.dumps(mv_status, indent=2)

    from mlflow.tracking import MlflowClient

    uri = state["mlflowTrackingUri"]
    client = MlflowClient(uri, registry_uri=uri)  # not the process-wide registry URI
    champion = client.get_model_version_by_alias("iris", "champion")
    assert champion.version == str(mv_status["version"])
    assert champion.run_id == run_id
    runs = client.search_runs(
        [client.get_experiment_by_name("iris").experiment_id],
        filter_string="tags.`mlops.dev/trainingrun` = 'demo/iris-train-1'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"

    listing = cluster.kubectl("get", "mlops", "-A").stdout
    assert "iris-train-1" in listing and mv_name in listing and "Promoted" in listing


def test_trained_model_passes_the_holdout_validation_job(stack: LocalStack) -> None:
    """The reference trainer's model (class names) through the evaluator's holdout Job."""
    import yaml

    state = stack.state
    cluster = Cluster(Path(state["kubeconfig"]), kubectl_path=state["kubectl"], kind="local")
    doc = yaml.safe_load((REPO / "examples/iris/modelversion-holdout.yaml").read_text())
    doc["metadata"]["name"] = "iris-holdout-v1"
    doc["spec"]["version"] = "1"  # the version the first test trained and promoted
    cluster.kubectl("apply", "-n", "demo", "-f", "-", input=yaml.safe_dump(doc))

    def status() -> dict:
        out = cluster.kubectl("get", "mv", "iris-holdout-v1", "-n", "demo", "-o", "json")
        return json.loads(out.stdout).get("status", {})

    cluster.wait_for(
        "the holdout ModelVersion to be decided",
        lambda: status().get("phase") in ("Promoted", "Rejected", "Failed"),
        timeout=180,
    )
    st = status()
    assert st["phase"] == "Promoted", json.dumps(st, indent=2)
    checks = {c["name"]: c for c in st["checks"]}
    assert checks["holdout_accuracy >= min"]["value"] > 0.9
    assert st["alias"] == "challenger"
