"""Baseline histograms and PSI over a sliding window."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlops_runtime.drift import DriftMonitor, compute_baseline, psi, validate_baseline


def test_baseline_format(iris) -> None:  # noqa: ANN001
    X, _, names = iris
    baseline = compute_baseline(X, names, bins=8)
    json.dumps(baseline)  # JSON-serialisable as the run artifact
    assert baseline["n_rows"] == 150 and len(baseline["features"]) == 4
    first = baseline["features"][0]
    assert first["name"] == names[0]
    assert len(first["bin_edges"]) == 9 and len(first["counts"]) == 8
    assert sum(first["counts"]) == 150
    assert validate_baseline(baseline) is baseline


def test_constant_column_and_bad_input() -> None:
    baseline = compute_baseline(np.ones((5, 1)), ["c"], bins=4)
    assert sum(baseline["features"][0]["counts"]) == 5
    with pytest.raises(ValueError):
        compute_baseline(np.ones((3, 2)), ["only-one"])
    with pytest.raises(ValueError):
        validate_baseline({"features": [{"name": "a", "bin_edges": [0, 1], "counts": [1, 2]}]})
    with pytest.raises(ValueError):
        validate_baseline({"features": [{"name": "a", "bin_edges": [1, 0], "counts": [1]}]})


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([10, 20, 30], [30, 20, 10]) > 0.5
    assert psi([1, 1], [0, 0]) == 0.0  # empty window: no score


def test_monitor_window_scores_drift(iris, iris_baseline) -> None:  # noqa: ANN001
    X, _, names = iris
    monitor = DriftMonitor(iris_baseline, window=100)
    assert monitor.scores() == {}
    rng = np.random.default_rng(0)
    monitor.observe(X[rng.permutation(150)[:100]])
    calm = monitor.scores()
    assert set(calm) == set(names) and max(calm.values()) < 0.2
    shifted = X[:100] + np.array([3.0, 0, 0, 0])  # only the first feature moves
    for start in range(0, 100, 30):  # several small writes wrap around the ring buffer
        monitor.observe(shifted[start : start + 30])
    drifted = monitor.scores()
    assert drifted[names[0]] > 1.0
    assert drifted[names[0]] > 5 * max(drifted[n] for n in names[1:])


def test_no_score_until_the_window_has_enough_rows(iris, iris_baseline) -> None:  # noqa: ANN001
    X, _, _ = iris
    monitor = DriftMonitor(iris_baseline, window=1000, min_rows=50)
    monitor.observe(X[:49])
    assert monitor.scores() == {}  # 49 rows: too few to score
    monitor.observe(X[49:50])
    assert len(monitor.scores()) == 4
    assert DriftMonitor(iris_baseline, window=20).min_rows == 20  # never more than the window


def test_monitor_ignores_rows_of_the_wrong_width(iris_baseline) -> None:  # noqa: ANN001
    monitor = DriftMonitor(iris_baseline, window=10)
    monitor.observe(np.ones((3, 2)))
    assert monitor.scores() == {}
    monitor.observe(np.ones((25, 4)))  # more rows than the window keeps the last ones
    assert len(monitor.scores()) == 4


def test_drift_metric_exported(iris_model_dir, iris, iris_baseline, scrape) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from mlops_runtime.dataplane import DataPlane
    from mlops_runtime.model import load_model
    from mlops_runtime.rest import create_app
    from mlops_runtime.settings import RuntimeSettings

    settings = RuntimeSettings(model_uri=str(iris_model_dir), model_name="iris", drift_window=50)
    plane = DataPlane(settings)
    model = load_model(str(iris_model_dir), "iris")
    model.baseline = iris_baseline
    plane.install(model)
    X, _, names = iris
    with TestClient(create_app(settings, plane)) as c:
        rows = (X[:50] + np.array([0, 0, 5.0, 0])).tolist()
        assert c.post("/predict", json={"instances": rows[:20]}).status_code == 200
        assert "mlops_runtime_feature_drift_psi{" not in c.get("/metrics").text  # 20 < 50 rows
        assert c.post("/predict", json={"instances": rows[20:]}).status_code == 200
        text = c.get("/metrics").text
    psi = {s.labels["feature"]: s.value for s in scrape(text).series("mlops_runtime_feature_drift_psi")}
    assert set(psi) == set(names)
    assert psi[names[2]] > 1.0
