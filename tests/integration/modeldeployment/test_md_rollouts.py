"""ModelDeployment rollouts for real: Immediate under continuous load, a healthy canary, a bad
candidate rolled back, and no data held as inconclusive (node stand-in, MLflow, Prometheus, the
operator as a process)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from argocd_health import health
from mdhelpers import MD, Load, register_versions

pytestmark = pytest.mark.integration


def one_variant(name: str, model: str, rollout: dict[str, Any]) -> dict[str, Any]:
    """A ModelDeployment of one variant following ``champion``, with two replicas."""
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model,
                 "variants": [{"name": "champion", "modelUri": f"models:/{model}@champion",
                               "weight": 100, "replicas": 2}],
                 "traffic": {"router": "builtin"}, "rollout": rollout},
    }


def promote(kubectl: Any, namespace: str, model: str, version: str) -> None:
    """Promote ``version`` to champion the way users do: a ModelVersion (no gates, Auto)."""
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "mlops.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": f"{model}-v{version}"},
        "spec": {"model": model, "version": version, "promote": {"alias": "champion"}},
    }))


ERROR_RATE = {
    "name": "error-rate",
    "query": ('(sum(increase(mlops_runtime_errors_total{namespace="{{namespace}}",'
              'deployment="{{deployment}}",variant="{{variant}}",version="{{version}}",'
              'kind="server"}[20s])) or vector(0)) / (sum(increase(mlops_runtime_requests_total{'
              'namespace="{{namespace}}",deployment="{{deployment}}",variant="{{variant}}",'
              'version="{{version}}"}[20s])) > 0)'),
    "successCondition": "result < 0.05", "failureCondition": "result > 0.2",
}


def test_immediate_rolls_to_a_promoted_champion_with_no_failed_request(
    node: Any, mlflow_server: Any, md: MD, kubectl: Any, namespace: str,
) -> None:
    from mlflow import MlflowClient

    model = f"md-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_versions(mlflow_server.tracking_uri, model, ["good", "good"])
    MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(model, "champion", v1)
    md.apply(one_variant("imm", model, {"strategy": "Immediate"}))
    md.wait_status("imm", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    with Load(md.router_url("imm"), model) as load:
        md.wait("traffic to flow", lambda: load.counts[v1] >= 20)
        promote(kubectl, namespace, model, v2)
        st = md.wait_status("imm", lambda s: s.get("champion") == v2 and s["phase"] == "Ready",
                            "v2 rolled out", timeout=240)
        md.wait("v2 to answer", lambda: load.counts[v2] >= 20)
    assert load.failures() == {}, load.counts
    assert st["variants"][0]["readyReplicas"] == 2
    pods = md.get("pods", selector="mlops.dev/deployment=imm,app.kubernetes.io/component="
                  "model-server")
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert {p["metadata"]["labels"]["mlops.dev/version"] for p in live} == {v2}
    reasons = [e["reason"] for e in md.events("imm")]
    assert "RolloutStarted" in reasons


def test_canary_steps_through_to_the_new_version_when_analysis_passes(
    node: Any, mlflow_server: Any, prometheus: Any, md: MD, kubectl: Any, namespace: str,
) -> None:
    from mlflow import MlflowClient

    model = f"md-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_versions(mlflow_server.tracking_uri, model, ["good", "good"])
    MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(model, "champion", v1)
    md.apply(one_variant("can", model, {
        "strategy": "Canary",
        "steps": [{"weight": 30, "pause": "5s"}, {"weight": 100, "pause": "5s"}],
        "analysis": {"prometheus": {"address": prometheus.url}, "interval": "5s",
                     "metrics": [ERROR_RATE]},
    }))
    md.wait_status("can", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    seen: list[tuple[Any, ...]] = []
    argo: set[str] = set()

    def track(s: dict[str, Any]) -> bool:
        ro = s.get("rollout") or {}
        key = (ro.get("state"), ro.get("step"), ro.get("weight"))
        if ro and (not seen or seen[-1] != key):
            seen.append(key)
            argo.add(health(md.get("modeldeployment", "can"))[0])
        return s.get("champion") == v2 and not ro and s.get("phase") == "Ready"

    with Load(md.router_url("can"), model) as load:
        md.wait("traffic to flow", lambda: load.counts[v1] >= 20)
        MlflowClient(mlflow_server.tracking_uri).set_registered_model_alias(model, "champion", v2)
        md.wait_status("can", track, "the canary to finish", timeout=300)
    assert load.failures() == {}, load.counts
    assert load.counts[v2] > 0
    assert ("Progressing", 0, 30) in seen and ("Progressing", 1, 100) in seen, seen
    assert any(state == "Promoting" for state, _, _ in seen), seen
    assert argo == {"Progressing"}  # what Argo CD shows while the canary runs
    assert health(md.get("modeldeployment", "can"))[0] == "Healthy"
    reasons = [e["reason"] for e in md.events("can")]
    for reason in ("RolloutStarted", "RolloutStep", "RolloutStepsPassed", "RolloutPromoted"):
        assert reason in reasons, reasons
    assert md.get("deployment", "can-champion-canary") is None


def test_a_bad_candidate_is_rolled_back_and_gets_no_more_traffic(
    node: Any, mlflow_server: Any, prometheus: Any, md: MD, kubectl: Any, namespace: str,
) -> None:
    from mlflow import MlflowClient

    model = f"md-{uuid.uuid4().hex[:6]}"
    v1, bad = register_versions(mlflow_server.tracking_uri, model, ["good", "bad"])
    client = MlflowClient(mlflow_server.tracking_uri)
    client.set_registered_model_alias(model, "champion", v1)
    md.apply(one_variant("bad", model, {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pause": "30s"}, {"weight": 100}],
        "analysis": {"prometheus": {"address": prometheus.url}, "interval": "4s",
                     "failureLimit": 0, "metrics": [ERROR_RATE]},
    }))
    md.wait_status("bad", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    with Load(md.router_url("bad"), model) as load:
        md.wait("traffic to flow", lambda: load.counts[v1] >= 20)
        promote(kubectl, namespace, model, bad)
        st = md.wait_status("bad", lambda s: (s.get("rollout") or {}).get("state") == "Aborted",
                            "the canary to be aborted", timeout=300)
        assert load.counts["HTTP 500"] > 0  # the canary did get traffic, and failed it
        md.wait("the canary's pods to go", lambda: md.get("deployment", "bad-champion-canary")
                is None)
        before = dict(load.counts)
        md.wait("more traffic after the abort", lambda: load.counts[v1] >= before[v1] + 200)
        after = {k: load.counts[k] - before.get(k, 0) for k in load.counts}
    assert set(k for k, n in after.items() if n) == {v1}, after  # nothing reached the bad one
    assert st["phase"] == "Degraded" and st["champion"] == v1
    assert health(md.get("modeldeployment", "bad"))[0] == "Degraded"
    degraded = md.condition("bad", "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolloutAborted"
    assert "error-rate" in degraded["message"] and "mlops_runtime_errors_total" in (
        degraded["message"])
    assert any(e["reason"] == "RolloutAborted" and e["type"] == "Warning"
               for e in md.events("bad"))
    mv_events = md.events(f"{model}-v{bad}")
    assert any(e["reason"] == "RolloutAborted" for e in mv_events), mv_events
    tags = client.get_model_version(model, bad).tags
    assert tags["mlops.dev/rollout-aborted"].startswith(f"{namespace}/bad: aborted")
    assert client.get_model_version_by_alias(model, "champion").version == bad  # not moved back


def test_no_data_is_inconclusive_and_never_advances_a_step(
    node: Any, mlflow_server: Any, prometheus: Any, md: MD, namespace: str,
) -> None:
    from mlflow import MlflowClient

    model = f"md-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_versions(mlflow_server.tracking_uri, model, ["good", "good"])
    client = MlflowClient(mlflow_server.tracking_uri)
    client.set_registered_model_alias(model, "champion", v1)
    silent = {"name": "silence", "query": 'sum(no_such_metric{namespace="{{namespace}}"})',
              "successCondition": "result < 1"}
    md.apply(one_variant("quiet", model, {
        "strategy": "Canary", "steps": [{"weight": 20}, {"weight": 100}],
        "analysis": {"prometheus": {"address": prometheus.url}, "interval": "2s",
                     "metrics": [silent]},
    }))
    md.wait_status("quiet", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    client.set_registered_model_alias(model, "champion", v2)

    def measured_twice(s: dict[str, Any]) -> bool:
        ro = s.get("rollout") or {}
        return bool(ro.get("measurements")) and ro.get("lastAnalysis") != ro.get("stepStarted")

    st = md.wait_status("quiet", measured_twice, "two inconclusive rounds", timeout=240)
    ro = st["rollout"]
    assert ro["step"] == 0 and ro["weight"] == 20 and ro["state"] == "Progressing"
    assert [m["verdict"] for m in ro["measurements"]] == ["Inconclusive"]
    assert "inconclusive" in ro["message"] and "not advancing" in ro["message"]
    assert st["champion"] == v1
