"""The holdout evaluator (the default validation Job): holdout, labels, metrics, CLI contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_runtime import cli
from mlops_runtime.evaluate import align_labels, compute_metrics, load_holdout, main

IRIS_CSV = Path(__file__).resolve().parents[3] / "examples" / "iris" / "data" / "iris.csv"


def test_numeric_labels_become_names_when_the_model_predicts_names() -> None:
    holdout = load_holdout("sklearn://iris")
    names = align_labels(holdout, ["setosa"])
    assert set(names) == {"setosa", "versicolor", "virginica"}
    assert len(names) == len(holdout.x) == 45


def test_numeric_models_keep_numeric_labels() -> None:
    holdout = load_holdout("sklearn://iris")
    assert set(align_labels(holdout, [0, 1])) == {0, 1, 2}


def test_perfect_name_predictions_score_one() -> None:
    truth = align_labels(load_holdout("sklearn://iris"), ["setosa"])
    metrics = compute_metrics(truth, list(truth), "holdout_")
    assert metrics["holdout_accuracy"] == 1.0
    assert metrics["holdout_accuracy_class_virginica"] == 1.0


def test_the_builtin_holdout_is_a_fixed_stratified_30_percent_split() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    # class names sort in another order than their codes (malignant=0, benign=1): the split
    # must still be the one on scikit-learn's numeric labels
    bunch = load_breast_cancer(as_frame=True)
    _, expected, _, codes = train_test_split(bunch.data, bunch.target, test_size=0.3,
                                             random_state=0, stratify=bunch.target)  # fmt: skip
    holdout = load_holdout("sklearn://breast_cancer")
    assert list(holdout.x.index) == list(expected.index)
    assert align_labels(holdout, [0]) == list(codes)


def test_a_file_is_the_whole_holdout_with_the_last_column_as_labels(tmp_path: Path) -> None:
    holdout = load_holdout(str(IRIS_CSV))
    assert len(holdout.x) == 150 and holdout.y.name == "species"
    assert align_labels(holdout, [0]) == list(holdout.y)  # no class codes to map to
    with pytest.raises(ValueError, match="target column 'nope'"):
        load_holdout(str(IRIS_CSV), target="nope")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean evaluator environment; returns the termination log path."""
    for var in ("MLOPS_MODEL_URI", "MODEL_URI", "MLFLOW_RUN_ID", "DATASET_URI"):
        monkeypatch.delenv(var, raising=False)
    term = tmp_path / "termination-log"
    monkeypatch.setenv("MLOPS_LOCAL_TERMINATION_LOG", str(term))
    return term


def test_missing_inputs_exit_2_as_a_module(env: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlops_runtime.evaluate"], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "MLOPS_MODEL_URI and MLFLOW_RUN_ID are required" in done.stderr
    assert env.read_text() == "evaluate: MLOPS_MODEL_URI and MLFLOW_RUN_ID are required"


def test_evaluate_logs_holdout_metrics_into_the_run(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    iris_model_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("eval")).info.run_id
    monkeypatch.setenv("MODEL_URI", str(iris_model_dir))  # the fallback name
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    monkeypatch.setenv("DATASET_URI", "sklearn://iris")
    assert cli.main(["evaluate", "--prefix", "h_"]) == 0  # as `mlops-runtime evaluate`
    logged = client.get_run(run_id).data.metrics
    assert logged["h_accuracy"] > 0.9 and 0 < logged["h_f1_macro"] <= 1
    # the model predicts class codes, so the per-class metrics are named by code
    assert {"h_accuracy_class_0", "h_accuracy_class_1", "h_accuracy_class_2"} <= set(logged)
    assert f"h_accuracy={logged['h_accuracy']:.6g}" in capsys.readouterr().out

    monkeypatch.setenv("MLOPS_MODEL_URI", str(tmp_path / "no-model"))  # wins over MODEL_URI
    assert main(["--dataset", "sklearn://iris"]) == 1
    assert env.read_text().startswith(f"evaluation of {tmp_path / 'no-model'} on sklearn://iris failed:")
