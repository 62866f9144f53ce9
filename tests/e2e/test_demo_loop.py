"""The demo loop, end to end, on a `LocalStack` of its own — what `make demo` does.

Control plane + node stand-in + MLflow + Prometheus + Alertmanager + the operator as a process:
train → promote → deploy 90/10 → drifted traffic → the drift alert fires → exactly one
retraining TrainingRun (while Alertmanager repeats) → validated → promoted → the deployment
serves the new champion. Counted, not eyeballed.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_localstack.cluster import Cluster
from mlops_localstack.loop import LoopResult, run_loop
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


@pytest.fixture(scope="module")
def loop(stack: LocalStack) -> LoopResult:
    """The whole loop, run once; the tests below read what it left."""
    return run_loop(stack.state, namespace="demo")


def _kubectl_json(stack: LocalStack, *args: str) -> dict:
    cluster = Cluster(Path(stack.state["kubeconfig"]), kubectl_path=stack.state["kubectl"])
    return json.loads(cluster.kubectl(*args, "-n", "demo", "-o", "json").stdout)


def test_drift_starts_exactly_one_retraining_and_the_deployment_serves_its_model(
    stack: LocalStack, loop: LoopResult,
) -> None:
    from mlflow.tracking import MlflowClient

    assert int(loop.new_version) > int(loop.first_version)
    (retrain,) = loop.retrains  # exactly one, although Alertmanager kept repeating
    meta = retrain["metadata"]
    assert meta["annotations"]["mlops.dev/alert-name"] == "ModelFeatureDrift"
    assert meta["labels"]["mlops.dev/deployment"] == "iris"
    assert meta["ownerReferences"][0]["kind"] == "ModelDeployment"
    sent = {f.name: f for f in text_string_to_metric_families(
        httpx.get(f"{stack.state['alertmanagerUrl']}/metrics", timeout=10).text)}
    webhook = [s.value for s in sent["alertmanager_notifications"].samples
               if s.name == "alertmanager_notifications_total"
               and s.labels.get("integration") == "webhook"]
    assert webhook and webhook[0] >= 2, webhook  # the alert was delivered again and again
    md = _kubectl_json(stack, "get", "md", "iris")["status"]
    assert md["champion"] == loop.new_version and md["phase"] == "Ready"
    assert md["challenger"] == loop.first_version  # the control group stays pinned
    assert md["lastRetrain"]["trainingRun"] == meta["name"]
    assert md["lastRetrain"]["alert"] == "ModelFeatureDrift"
    assert loop.answers[loop.new_version] > 0 and loop.failed_requests == 0, loop.answers
    uri = stack.state["mlflowTrackingUri"]
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version_by_alias("iris", "champion").version == loop.new_version
    assert [what for _, what, _ in loop.timeline.rows][-1].startswith("serving ")


def test_every_dashboard_panel_has_data(stack: LocalStack, loop: LoopResult) -> None:
    dashboard = json.loads((REPO / "dashboards/mlops-operator.json").read_text())
    prom = stack.state["prometheusUrl"]
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            r = httpx.get(f"{prom}/api/v1/query", params={"query": target["expr"]}, timeout=10)
            assert r.json()["status"] == "success", (panel["title"], r.text)
            if not r.json()["data"]["result"]:
                empty.append(panel["title"])
    assert empty == []


def test_the_stage_table_counts_every_stage_of_the_loop(stack: LocalStack,
                                                        loop: LoopResult) -> None:
    from mlops_operator.stages import main as stages

    out = io.StringIO()
    with redirect_stdout(out):
        code = stages(stack.state["prometheusUrl"], None, True)
    assert code == 0, out.getvalue()
    rows = {row["stage"]: row for row in json.loads(out.getvalue())}
    for stage in ("training", "validation", "promotion", "deployment", "retrain"):
        assert rows[stage]["runs"] >= 1, rows
    assert rows["training"]["runs"] == 2  # the first training and the retraining


def test_trained_model_passes_the_holdout_validation_job(stack: LocalStack,
                                                        loop: LoopResult) -> None:
    """The reference trainer's model (class names) through the evaluator's holdout Job."""
    import yaml

    state = stack.state
    cluster = Cluster(Path(state["kubeconfig"]), kubectl_path=state["kubectl"], kind="local")
    doc = yaml.safe_load((REPO / "examples/iris/modelversion-holdout.yaml").read_text())
    doc["metadata"]["name"] = "iris-holdout-v1"
    doc["spec"]["version"] = loop.first_version  # the loop's first trained version
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
    from mlflow.tracking import MlflowClient

    uri = state["mlflowTrackingUri"]
    run = MlflowClient(uri, registry_uri=uri).get_run(st["runId"])
    # the holdout is the trainer's own held-out split (recorded in the run), not rows it fitted:
    # the same model on the same rows scores what the trainer measured
    assert run.data.tags["mlops.dev/holdout"] == "training-split"
    value = checks["holdout_accuracy >= min"]["value"]
    assert value == pytest.approx(run.data.metrics["accuracy"]) and value >= 0.9
    assert st["alias"] == "challenger"
