"""The reference trainer's pure parts: params, datasets and digests, estimators, metrics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlops_runtime.datasets import DatasetError, check_uri, load_dataset
from mlops_runtime.train import (
    TrainingError,
    baseline_histograms,
    coerce,
    evaluate,
    make_estimator,
    metric_key,
    params_from_env,
    split_features,
)

IRIS_CSV = Path(__file__).resolve().parents[3] / "examples" / "iris" / "data" / "iris.csv"


def test_params_from_json_win_over_param_vars() -> None:
    env = {"MLOPS_PARAMS": '{"C": "0.5", "max_iter": 200}', "PARAM_C": "9"}
    assert params_from_env(env) == {"C": "0.5", "max_iter": "200"}
    assert params_from_env({"PARAM_N_ESTIMATORS": "10"}) == {"n_estimators": "10"}
    with pytest.raises(TrainingError, match="JSON object"):
        params_from_env({"MLOPS_PARAMS": "[1]"})


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("0.5", 0.5), ("true", True), ("None", None), ("lbfgs", "lbfgs"), ("-1", -1)],
)
def test_coerce(text: str, value: object) -> None:
    assert coerce(text) == value


def test_estimators_take_their_params_and_report_the_rest() -> None:
    est, chosen, unused = make_estimator(
        {"model_type": "random_forest", "n_estimators": "7", "C": "1", "target": "y"}
    )
    assert type(est).__name__ == "RandomForestClassifier" and est.n_estimators == 7
    assert chosen == {"n_estimators": 7} and unused == ["C"]
    with pytest.raises(TrainingError, match="unknown model_type 'svm'"):
        make_estimator({"model_type": "svm"})


def test_sklearn_dataset_has_a_stable_digest_and_class_names() -> None:
    a, b = load_dataset("sklearn://iris"), load_dataset("builtin://iris", version="x")
    assert a.digest == b.digest and a.digest.startswith("md5:") and len(a.digest_hex) == 32
    assert set(a.frame["target"]) == {"setosa", "versicolor", "virginica"}
    assert b.version == "x"


def test_csv_digest_is_the_md5_of_the_file(tmp_path: Path) -> None:
    ds = load_dataset(str(IRIS_CSV))
    assert ds.digest == "md5:" + hashlib.md5(IRIS_CSV.read_bytes()).hexdigest()
    assert ds.name == "iris" and len(ds.frame) == 150
    other = tmp_path / "iris.csv"
    other.write_text("".join(IRIS_CSV.read_text().splitlines(keepends=True)[:60]))
    assert load_dataset(f"file://{other}").digest != ds.digest


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("nosuch://x/y.csv", "unknown dataset URI scheme 'nosuch'"),
        ("sklearn://mnist", "unknown scikit-learn dataset 'mnist'"),
    ],
)
def test_unknown_uris_are_rejected_clearly(uri: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        check_uri(uri)


def test_missing_and_unreadable_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(str(tmp_path / "absent.csv"))
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"just one column\n1\n2\n")
    with pytest.raises(DatasetError, match="no usable table"):
        load_dataset(str(junk))
    with pytest.raises(DatasetError, match="no dataset given"):
        load_dataset(None)


def test_split_evaluate_and_baseline() -> None:
    from sklearn.model_selection import train_test_split

    ds = load_dataset(str(IRIS_CSV))
    X, y, features, target = split_features(ds, {})
    assert target == "species" and len(features) == 4
    with pytest.raises(TrainingError, match="target column 'nope'"):
        split_features(ds, {"target": "nope"})
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=1, stratify=y)
    est, _, _ = make_estimator({})
    est.fit(X_tr, y_tr)
    frame = ds.frame.loc[X_te.index]
    metrics = evaluate(est, X_te, y_te, X_tr, y_tr, {"petal_width": frame["petal_width"]})
    for label in ("setosa", "versicolor", "virginica"):
        assert 0.0 <= metrics[f"accuracy_class_{label}"] <= 1.0
        assert f"recall_class_{label}" in metrics and f"f1_class_{label}" in metrics
    assert {"accuracy", "f1_macro", "log_loss", "n_test"} <= set(metrics)
    assert [k for k in metrics if k.startswith("accuracy_slice_petal_width_")]
    baseline = baseline_histograms(X_tr, features)
    assert [f["name"] for f in baseline["features"]] == features
    assert all(sum(f["counts"]) == len(X_tr) for f in baseline["features"])


def test_bad_hyperparameter_fails_in_sklearn() -> None:
    ds = load_dataset("sklearn://iris")
    X, y, _, _ = split_features(ds, {})
    est, _, _ = make_estimator({"C": "-1"})
    with pytest.raises(ValueError, match="'C' parameter"):
        est.fit(X, y)


def test_metric_key() -> None:
    assert metric_key("Iris Setosa!") == "Iris_Setosa"
    assert metric_key("(0.1, 0.5]") == "0.1__0.5"
