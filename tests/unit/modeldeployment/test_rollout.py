"""The pure rollout state machine and the analysis verdicts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mlops_operator.analysis import QueryError, holds, judge, render, scalar
from mlops_operator.api import ModelDeploymentSpec
from mlops_operator.api.modeldeployment import AnalysisMetric
from mlops_operator.rollout import analysis_due, decide, next_wakeup, ts

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def spec(strategy: str = "Canary", steps: Any = None, analysis: Any = None,
         auto_promote: bool = True, variants: Any = None) -> ModelDeploymentSpec:
    rollout: dict[str, Any] = {"strategy": strategy, "autoPromote": auto_promote}
    if strategy == "Canary":
        rollout["steps"] = steps or [{"weight": 20, "pause": "1m"}, {"weight": 50, "pause": "1m"}]
    if analysis:
        rollout["analysis"] = analysis
    return ModelDeploymentSpec.model_validate({
        "model": "iris",
        "variants": variants or [{"name": "champion", "modelUri": "models:/iris@champion",
                                  "weight": 90},
                                 {"name": "challenger", "modelUri": "models:/iris/1",
                                  "weight": 10}],
        "rollout": rollout,
    })


ANALYSIS = {"interval": "30s", "failureLimit": 1,
            "metrics": [{"name": "errors", "query": "sum(x)", "successCondition": "result < 0.05"}]}
OK = [{"metric": "errors", "verdict": "Successful", "value": 0.0}]
BAD = [{"metric": "errors", "verdict": "Failed", "value": 0.5, "query": "sum(x)"}]
NODATA = [{"metric": "errors", "verdict": "Inconclusive"}]
STABLE = {"champion": "1", "challenger": "1"}
NEW = {"champion": "2", "challenger": "1"}


def run(s: ModelDeploymentSpec, ro: Any, *, stable: Any = STABLE, desired: Any = NEW,
        canary_ready: bool = True, stable_ready: Any = None, m: Any = None, now: Any = T0):
    return decide(s, stable, desired, ro, canary_ready=canary_ready,
                  stable_ready=stable_ready or {}, measurements=m, now=now)


def test_first_deploy_serves_desired_at_once_without_a_canary() -> None:
    d = run(spec(), None, stable={}, desired=NEW)
    assert d.stable == NEW and d.rollout is None and d.canary is None


@pytest.mark.parametrize("strategy", ["Immediate", "AB"])
def test_immediate_and_ab_switch_the_stable_version(strategy: str) -> None:
    d = run(spec(strategy), None)
    assert d.stable == NEW and d.rollout is None and d.canary is None
    assert [e[1] for e in d.events] == ["RolloutStarted"]


def test_canary_waits_for_its_pods_with_zero_weight() -> None:
    d = run(spec(), None, canary_ready=False)
    assert d.stable == STABLE  # the stable pods keep serving v1
    assert d.canary == ("champion", "2", 0)
    assert d.rollout["state"] == "Progressing" and d.rollout["stepStarted"] is None


def test_canary_steps_through_pauses_to_promotion_and_finishes_when_stable_rolled() -> None:
    s = spec()
    d = run(s, None)
    assert d.canary == ("champion", "2", 20) and d.rollout["stepStarted"] == ts(T0)
    d = run(s, d.rollout, now=T0 + dt.timedelta(seconds=30))  # pause not over
    assert d.canary == ("champion", "2", 20) and d.rollout["step"] == 0
    d = run(s, d.rollout, now=T0 + dt.timedelta(seconds=61))
    assert d.canary == ("champion", "2", 50) and d.rollout["step"] == 1
    d = run(s, d.rollout, now=T0 + dt.timedelta(seconds=122))
    assert d.rollout["state"] == "Promoting" and d.stable["champion"] == "2"
    assert d.canary == ("champion", "2", 50)  # the canary serves until the stable pods rolled
    d = run(s, d.rollout, stable=d.stable, stable_ready={"champion": True},
            now=T0 + dt.timedelta(seconds=130))
    assert d.rollout is None and d.canary is None and d.stable == NEW
    assert [e[1] for e in d.events] == ["RolloutPromoted"]


def test_analysis_gates_each_step_and_inconclusive_never_advances() -> None:
    s = spec(analysis=ANALYSIS)
    d = run(s, None)
    later = T0 + dt.timedelta(seconds=61)
    d2 = run(s, d.rollout, m=NODATA, now=later)
    assert d2.rollout["step"] == 0 and d2.rollout["failures"] == 0
    assert d2.rollout["measurements"] == NODATA
    d3 = run(s, d2.rollout, m=OK, now=later + dt.timedelta(seconds=30))
    assert d3.rollout["step"] == 1


def test_more_failures_than_the_limit_abort_and_the_version_is_not_retried() -> None:
    s = spec(analysis=ANALYSIS)
    d = run(s, None)
    d = run(s, d.rollout, m=BAD, now=T0 + dt.timedelta(seconds=30))
    assert d.rollout["state"] == "Progressing" and d.rollout["failures"] == 1  # limit 1
    d = run(s, d.rollout, m=BAD, now=T0 + dt.timedelta(seconds=60))
    assert d.rollout["state"] == "Aborted" and d.canary is None
    assert d.stable == STABLE and d.aborted[0:2] == ("champion", "2")
    assert "errors: sum(x) = 0.5" in d.rollout["message"]
    again = run(s, d.rollout, now=T0 + dt.timedelta(seconds=90))
    assert again.rollout["state"] == "Aborted" and again.canary is None and not again.events
    newer = run(s, d.rollout, desired={"champion": "3", "challenger": "1"},
                now=T0 + dt.timedelta(seconds=95))
    assert newer.rollout["version"] == "3" and newer.rollout["state"] == "Progressing"


def test_a_newer_version_mid_canary_restarts_from_step_zero() -> None:
    s = spec()
    d = run(s, None)
    d = run(s, d.rollout, now=T0 + dt.timedelta(seconds=61))
    assert d.rollout["step"] == 1
    d = run(s, d.rollout, desired={"champion": "3", "challenger": "1"},
            now=T0 + dt.timedelta(seconds=70))
    assert d.rollout["version"] == "3" and d.rollout["step"] == 0
    assert "RolloutRestarted" in [e[1] for e in d.events]


def test_desired_back_to_stable_cancels_the_canary() -> None:
    d = run(spec(), None)
    d = run(spec(), d.rollout, desired=STABLE)
    assert d.rollout is None and d.canary is None and d.stable == STABLE


def test_without_auto_promote_the_last_step_holds() -> None:
    s = spec(steps=[{"weight": 30}], auto_promote=False)
    d = run(s, None)
    assert d.rollout["state"] == "Paused" and d.canary == ("champion", "2", 30)
    assert d.stable == STABLE


def test_analysis_is_due_by_interval_and_the_next_wakeup_is_the_earliest_deadline() -> None:
    s = spec(analysis=ANALYSIS)
    d = run(s, None)
    assert analysis_due(s, d.rollout, T0)
    d = run(s, d.rollout, m=OK, now=T0)
    assert not analysis_due(s, d.rollout, T0 + dt.timedelta(seconds=10))
    assert analysis_due(s, d.rollout, T0 + dt.timedelta(seconds=30))
    assert next_wakeup(s, d.rollout, T0 + dt.timedelta(seconds=10)) == pytest.approx(20)


@pytest.mark.parametrize(("condition", "value", "expected"), [
    ("result < 0.05", 0.01, True), ("result < 0.05", 0.05, False),
    ("result>=1e-3", 0.001, True), ("result != -2", -2.0, False), ("result == 3", 3.0, True),
])
def test_conditions(condition: str, value: float, expected: bool) -> None:
    assert holds(condition, value) is expected


@pytest.mark.parametrize(("success", "failure", "value", "verdict"), [
    ("result < 0.1", None, 0.05, "Successful"),
    ("result < 0.1", None, 0.5, "Failed"),
    (None, "result > 0.1", 0.05, "Successful"),
    (None, "result > 0.1", 0.5, "Failed"),
    ("result < 0.1", "result > 0.3", None, "Inconclusive"),  # no data is never success
    ("result < 0.1", "result > 0.3", float("nan"), "Inconclusive"),
])
def test_judge(success: Any, failure: Any, value: Any, verdict: str) -> None:
    metric = AnalysisMetric.model_validate({"name": "m", "query": "q",
                                            **({"successCondition": success} if success else {}),
                                            **({"failureCondition": failure} if failure else {})})
    assert judge(metric, value) == verdict


def test_render_and_scalar() -> None:
    assert render('x{variant="{{variant}}",version="{{ version }}"}',
                  {"variant": "champion", "version": "2"}) == 'x{variant="champion",version="2"}'
    assert scalar({"resultType": "vector", "result": []}) is None
    assert scalar({"resultType": "vector", "result": [{"value": [0, "0.25"]}]}) == 0.25
    assert scalar({"resultType": "scalar", "result": [0, "7"]}) == 7.0
    with pytest.raises(QueryError, match="aggregate"):
        scalar({"resultType": "vector", "result": [{"value": [0, "1"]}, {"value": [0, "2"]}]})


def test_ab_keeps_its_latest_per_variant_round_and_wakes_at_the_interval() -> None:
    s = spec("AB", analysis=ANALYSIS)
    ro = {"lastAnalysis": ts(T0), "measurements": [{**OK[0], "variant": "champion"}],
          "message": "champion errors: Successful"}
    d = run(s, ro, now=T0 + dt.timedelta(seconds=5))
    assert d.stable == NEW and d.rollout == ro and d.canary is None
    assert next_wakeup(s, d.rollout, T0 + dt.timedelta(seconds=5)) == pytest.approx(25)
    assert run(spec("Immediate"), ro).rollout is None
