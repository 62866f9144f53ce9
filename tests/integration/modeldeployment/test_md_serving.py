"""A ModelDeployment served for real: pods on the node stand-in, the builtin router, MLflow,
Prometheus scraping the runtime pods, and the operator as a process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd_health import health
from mdhelpers import MD, Load, register_versions, send

pytestmark = pytest.mark.integration


def deployment(name: str, model: str, **rollout: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "variants": [
                {"name": "champion", "modelUri": f"models:/{model}@champion", "weight": 90,
                 "replicas": 2},
                {"name": "challenger", "modelUri": f"models:/{model}/2", "weight": 10,
                 "replicas": 1},
            ],
            "traffic": {"router": "builtin"},
            "rollout": rollout or {"strategy": "Immediate"},
        },
    }


def test_ready_with_three_pods_and_a_router_splitting_90_10(
    node: Any, mlflow_server: Any, prometheus: Any, md: MD, kubectl: Any, namespace: str,
) -> None:
    from mlflow import MlflowClient

    model = f"md-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_versions(mlflow_server.tracking_uri, model, ["good", "good"])
    MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(model, "champion", v1)
    md.apply(deployment("iris", model))
    st = md.wait_status("iris", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)

    assert [(v["name"], v["version"], v["weight"]) for v in st["variants"]] == [
        ("champion", v1, 90), ("challenger", v2, 10)]
    assert st["ready"] == "3/3" and st["champion"] == v1 and st["challenger"] == v2
    assert st["traffic"] == "champion=90 challenger=10"
    assert st["url"] == f"http://iris.{namespace}.svc:8080"
    assert md.condition("iris", "Ready")["status"] == "True"
    assert health(md.get("modeldeployment", "iris"))[0] == "Healthy"  # Argo CD's view
    pods = md.get("pods", selector="mlops.dev/deployment=iris,app.kubernetes.io/component="
                  "model-server")
    assert sorted((p["metadata"]["labels"]["mlops.dev/variant"],
                   p["metadata"]["labels"]["mlops.dev/version"]) for p in pods) == sorted(
        [("champion", v1), ("champion", v1), ("challenger", v2)])

    counts = send(md.router_url("iris"), model, 10_000)
    assert sum(counts.values()) == 10_000 and set(counts) == {v1, v2}, counts
    assert abs(counts[v1] / 10_000 - 0.90) <= 0.01, counts

    # what Prometheus scraped from the runtime pods agrees with what the clients saw
    def scraped() -> dict[str, float] | None:
        rows = prometheus.query(
            f'sum by (variant) (mlops_runtime_requests_total{{namespace="{namespace}",'
            f'model="{model}",endpoint="infer",code="200"}})')
        got = {r["metric"]["variant"]: float(r["value"][1]) for r in rows}
        return got if got == {"champion": counts[v1], "challenger": counts[v2]} else None

    md.wait("Prometheus to have scraped the per-variant request counters", scraped, timeout=90)

    out = kubectl("get", "md", "iris", "-n", namespace, "-o", "wide").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "CHAMPION", "CHALLENGER", "TRAFFIC", "READY",
                              "PHASE", "URL", "AGE"]
    cells = row.split()
    assert cells[:3] == ["iris", model, v1] and cells[3] == v2
    assert "champion=90" in row and "3/3" in row and "Ready" in row and st["url"] in row


EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "iris" / "modeldeployment.yaml"


def test_the_example_serves_and_each_analysis_query_returns_data_once_traffic_flows(
    node: Any, mlflow_server: Any, prometheus: Any, md: MD, namespace: str,
) -> None:
    """examples/iris/modeldeployment.yaml as written, under a model name of its own (the
    session's MLflow is shared): every analysis query has data from the real Prometheus."""
    from mlflow import MlflowClient

    from mlops_operator.analysis import query, render

    model = f"iris-{uuid.uuid4().hex[:6]}"
    text = EXAMPLE.read_text().replace("models:/iris@", f"models:/{model}@")
    doc = yaml.safe_load(text)
    doc["spec"]["model"] = doc["spec"]["retrain"]["template"]["model"] = model
    v1, v2 = register_versions(mlflow_server.tracking_uri, model, ["good", "good"])
    client = MlflowClient(mlflow_server.tracking_uri)
    client.set_registered_model_alias(model, "champion", v1)
    client.set_registered_model_alias(model, "challenger", v2)
    md.apply(doc)
    name = doc["metadata"]["name"]
    md.wait_status(name, lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    # traffic keeps flowing while the queries are evaluated: rate() needs two scrapes that
    # saw the counters move
    with Load(md.router_url(name), model):
        for metric in doc["spec"]["rollout"]["analysis"]["metrics"]:
            for variant, version in (("champion", v1), ("challenger", v2)):
                promql = render(metric["query"], {"namespace": namespace, "deployment": name,
                                                  "variant": variant, "version": version})
                value = md.wait(f"data for {metric['name']} of {variant}",
                                lambda q=promql: (v := query(prometheus.url, q)) is not None
                                and [v], timeout=90)[0]
                assert value >= 0, (metric["name"], variant, value)
