"""The validation gates as pure functions: every gate type passing and failing."""

from __future__ import annotations

import json

import pytest

from mlops_operator.api import ValidationSpec
from mlops_operator.validation import (
    Baseline,
    checks_tag,
    compared_aliases,
    evaluate_gates,
    failure_summary,
    passed,
    primary_metric,
)


def spec(**kw: object) -> ValidationSpec:
    return ValidationSpec.model_validate(kw)


def champion(version: str = "1", **metrics: float) -> dict[str, Baseline | None]:
    return {"champion": Baseline("champion", version, "run-champ", metrics)}


def by_name(checks):  # noqa: ANN001, ANN201
    return {c.name: c for c in checks}


def test_min_and_max_pass_and_fail() -> None:
    v = spec(metrics=[{"name": "accuracy", "min": 0.9}, {"name": "loss", "max": 0.2}])
    ok = evaluate_gates(v, {"accuracy": 0.95, "loss": 0.1}, run_id="r1")
    assert passed(ok) and [c.name for c in ok] == ["accuracy >= min", "loss <= max"]
    assert ok[0].value == 0.95 and ok[0].threshold == 0.9
    bad = by_name(evaluate_gates(v, {"accuracy": 0.85, "loss": 0.3}, run_id="r1"))
    assert not bad["accuracy >= min"].passed and not bad["loss <= max"].passed
    assert bad["loss <= max"].threshold == 0.2 and bad["loss <= max"].value == 0.3


def test_boundaries_are_inclusive() -> None:
    v = spec(metrics=[{"name": "accuracy", "min": 0.9, "max": 0.9}])
    assert passed(evaluate_gates(v, {"accuracy": 0.9}))


def test_missing_metric_is_a_failed_check_naming_metric_and_run() -> None:
    v = spec(metrics=[{"name": "auc", "min": 0.8}])
    (check,) = evaluate_gates(v, {"accuracy": 0.99}, run_id="abc123")
    assert not check.passed
    assert check.message == "metric auc not found in run abc123"
    assert "metric auc not found in run abc123" in failure_summary([check])


def test_compare_higher_is_better_needs_min_improvement() -> None:
    v = spec(metrics=[{"name": "accuracy", "compareTo": "champion", "minImprovement": 0.02}])
    better = evaluate_gates(v, {"accuracy": 0.95}, champion(accuracy=0.92), candidate_version="2")
    assert passed(better)
    assert better[0].name == "accuracy vs champion" and better[0].threshold == pytest.approx(0.94)
    worse = evaluate_gates(v, {"accuracy": 0.93}, champion(accuracy=0.92), candidate_version="2")
    assert not passed(worse) and "v1" in (worse[0].message or "")


def test_compare_lower_is_better() -> None:
    v = spec(metrics=[{"name": "rmse", "compareTo": "champion", "direction": "LowerIsBetter",
                       "minImprovement": 0.1}])
    assert passed(evaluate_gates(v, {"rmse": 1.0}, champion(rmse=1.2), candidate_version="2"))
    res = evaluate_gates(v, {"rmse": 1.15}, champion(rmse=1.2), candidate_version="2")
    assert not passed(res) and res[0].threshold == pytest.approx(1.1)


def test_compare_equal_is_not_better_without_min_improvement() -> None:
    v = spec(metrics=[{"name": "accuracy", "compareTo": "champion"}])
    assert not passed(evaluate_gates(v, {"accuracy": 0.9}, champion(accuracy=0.9),
                                     candidate_version="2"))


def test_no_champion_passes_and_says_so() -> None:
    v = spec(metrics=[{"name": "accuracy", "compareTo": "champion", "minImprovement": 0.5}])
    (check,) = evaluate_gates(v, {"accuracy": 0.1}, {"champion": None})
    assert check.passed and check.message == "no champion yet: comparison passes"
    (check,) = evaluate_gates(v, {"accuracy": 0.1}, {})
    assert check.passed


def test_compare_with_itself_passes_and_force_skips() -> None:
    v = spec(metrics=[{"name": "accuracy", "compareTo": "champion"}])
    (check,) = evaluate_gates(v, {"accuracy": 0.9}, champion("3", accuracy=0.9),
                              candidate_version="3")
    assert check.passed and "already holds" in (check.message or "")
    (check,) = evaluate_gates(v, {"accuracy": 0.5}, champion("3", accuracy=0.9),
                              candidate_version="1", force=True)
    assert check.passed and "force" in (check.message or "")


def test_force_does_not_skip_absolute_gates() -> None:
    v = spec(metrics=[{"name": "accuracy", "min": 0.8, "compareTo": "champion"}])
    res = evaluate_gates(v, {"accuracy": 0.5}, champion(accuracy=0.9), candidate_version="1",
                         force=True)
    assert [c.passed for c in res] == [False, True]


def test_champion_without_the_metric_passes_and_says_so() -> None:
    v = spec(metrics=[{"name": "f1", "compareTo": "champion"}])
    (check,) = evaluate_gates(v, {"f1": 0.5}, champion(accuracy=0.9), candidate_version="2")
    assert check.passed and "has no metric f1" in (check.message or "")


def test_slice_floor_and_gap_with_prefix() -> None:
    v = spec(slices=[{"name": "per-class", "prefix": "accuracy_class_", "floor": 0.8,
                      "maxGap": 0.1}])
    metrics = {"accuracy": 0.9, "accuracy_class_a": 0.95, "accuracy_class_b": 0.9,
               "accuracy_class_c": 0.88}
    res = by_name(evaluate_gates(v, metrics))
    assert passed(res.values())
    assert res["per-class floor"].value == 0.88
    assert res["per-class gap"].value == pytest.approx(0.07)
    low = by_name(evaluate_gates(v, {**metrics, "accuracy_class_c": 0.7}))
    assert not low["per-class floor"].passed
    assert "accuracy_class_c=0.7" in (low["per-class floor"].message or "")
    assert not low["per-class gap"].passed and low["per-class gap"].value == pytest.approx(0.25)


def test_slice_gap_fails_above_floor() -> None:
    v = spec(slices=[{"name": "groups", "metrics": ["acc_g1", "acc_g2"], "floor": 0.5,
                      "maxGap": 0.05}])
    res = by_name(evaluate_gates(v, {"acc_g1": 0.9, "acc_g2": 0.8}))
    assert res["groups floor"].passed and not res["groups gap"].passed


def test_slice_missing_metrics_fail() -> None:
    v = spec(slices=[{"name": "groups", "metrics": ["acc_g1", "acc_g2"], "floor": 0.5}])
    (check,) = evaluate_gates(v, {"acc_g1": 0.9}, run_id="r9")
    assert not check.passed and check.message == "metric acc_g2 not found in run r9"
    v = spec(slices=[{"name": "cls", "prefix": "recall_class_", "floor": 0.5}])
    (check,) = evaluate_gates(v, {"acc_g1": 0.9}, run_id="r9")
    assert not check.passed and "recall_class_" in (check.message or "")


def test_no_validation_means_valid() -> None:
    assert evaluate_gates(None, {}) == [] and passed([])


def test_helpers() -> None:
    v = spec(metrics=[{"name": "accuracy", "min": 0.1, "compareTo": "champion"},
                      {"name": "f1", "compareTo": "challenger"},
                      {"name": "loss", "compareTo": "champion"}])
    assert compared_aliases(v) == ["champion", "challenger"]
    assert primary_metric(v).name == "accuracy"  # type: ignore[union-attr]
    assert primary_metric(spec(slices=[{"name": "s", "prefix": "a", "floor": 0}])) is None


def test_checks_tag_is_compact_json_within_the_limit_keeping_failures() -> None:
    v = spec(metrics=[{"name": f"m{i}", "min": 0.5} for i in range(30)])
    metrics = {f"m{i}": (0.1 if i == 29 else 0.9) for i in range(30)}
    checks = evaluate_gates(v, metrics)
    full = json.loads(checks_tag(checks))
    assert len(full) == 30 and full[0]["n"] == "m0 >= min"
    small = checks_tag(checks, limit=400)
    assert len(small) <= 400
    rows = json.loads(small)
    assert rows[0]["n"] == "m29 >= min" and rows[0]["p"] is False
