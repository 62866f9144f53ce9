"""The holdout Job evaluates rows the model never saw: the reference trainer records its split in
the run and the evaluator reproduces exactly that split.

A real run: ``mlops-runtime train`` into an in-process sqlite MLflow store, then
``mlops-runtime evaluate`` on the logged model. The rows the estimator was fitted on and the rows
the evaluator predicted are observed on the real objects (``fit`` and ``predict`` record their
input and call the real method).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_runtime.evaluate import main as evaluate_main
from mlops_runtime.train import main as train_main

IRIS_CSV = Path(__file__).resolve().parents[3] / "examples" / "iris" / "data" / "iris.csv"


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for var in ("MLFLOW_RUN_ID", "MLOPS_PARAMS", "DATASET_URI", "MLOPS_MODEL_URI", "MODEL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLOPS_LOCAL_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "holdout")
    monkeypatch.chdir(tmp_path)  # local artifacts land here
    # the trainer sets mlflow's process-wide tracking URI: restore it for later tests
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def fitted_rows(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The row labels every RandomForestClassifier.fit of this test was given."""
    from sklearn.ensemble import RandomForestClassifier

    seen: list[list[int]] = []
    real = RandomForestClassifier.fit

    def fit(self: Any, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append([int(i) for i in x.index])
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(RandomForestClassifier, "fit", fit)
    return seen


@pytest.fixture
def predicted_rows(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The row labels every model loaded by mlflow.pyfunc in this test was asked to predict."""
    import mlflow.pyfunc

    seen: list[list[int]] = []
    real_load = mlflow.pyfunc.load_model

    class Recording:
        def __init__(self, model: Any) -> None:
            self.model = model

        def predict(self, x: Any) -> Any:
            seen.append([int(i) for i in x.index])
            return self.model.predict(x)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda uri, *a, **k: Recording(
        real_load(uri, *a, **k)))
    return seen


def _train(client: Any, dataset: str) -> Any:
    code = train_main(["--dataset", dataset, "--param", "model_type=random_forest",
                       "--param", "n_estimators=10", "--param", "seed=7",
                       "--param", "test_size=0.3"])  # fmt: skip
    assert code == 0
    exp = client.get_experiment_by_name("holdout")
    (run,) = client.search_runs([exp.experiment_id])
    return run


@pytest.mark.parametrize("dataset", ["sklearn://iris", str(IRIS_CSV)], ids=["builtin", "file"])
def test_holdout_rows_are_exactly_the_rows_the_trainer_held_out(
    tracking: Any, fitted_rows: list[list[int]], predicted_rows: list[list[int]], dataset: str
) -> None:
    run = _train(tracking, dataset)
    run_id = run.info.run_id
    (trained,) = fitted_rows
    assert evaluate_main(["--model-uri", f"runs:/{run_id}/model", "--run-id", run_id,
                          "--dataset", dataset]) == 0  # fmt: skip
    (held_out,) = predicted_rows
    assert held_out, "the evaluator predicted no rows"
    assert set(held_out) & set(trained) == set(), "holdout rows the model was trained on"
    assert sorted(held_out) == sorted(set(range(150)) - set(trained))
    assert len(held_out) == int(run.data.metrics["n_test"])
    logged = tracking.get_run(run_id)
    assert logged.data.tags["mlops.dev/holdout"] == "training-split"
    # the evaluator scored the same rows the trainer did: with the same model, the same accuracy
    assert logged.data.metrics["holdout_accuracy"] == pytest.approx(
        logged.data.metrics["accuracy"])


def test_without_a_dataset_the_evaluator_uses_the_runs_own_split(
    tracking: Any, fitted_rows: list[list[int]], predicted_rows: list[list[int]]
) -> None:
    run = _train(tracking, "sklearn://wine")
    run_id = run.info.run_id
    assert evaluate_main(["--model-uri", f"runs:/{run_id}/model", "--run-id", run_id]) == 0
    (trained,), (held_out,) = fitted_rows, predicted_rows
    assert held_out and not set(held_out) & set(trained)
    assert len(held_out) == int(run.data.metrics["n_test"])


def test_a_separate_holdout_file_is_used_whole(
    tracking: Any, fitted_rows: list[list[int]], predicted_rows: list[list[int]], tmp_path: Path
) -> None:
    run = _train(tracking, str(IRIS_CSV))
    run_id = run.info.run_id
    lines = IRIS_CSV.read_text().splitlines()
    other = tmp_path / "holdout.csv"
    other.write_text("\n".join(lines[:1] + lines[1::3]) + "\n")  # another table: 50 rows
    assert evaluate_main(["--model-uri", f"runs:/{run_id}/model", "--run-id", run_id,
                          "--dataset", str(other)]) == 0  # fmt: skip
    (held_out,) = predicted_rows
    assert len(held_out) == 50
    assert tracking.get_run(run_id).data.tags["mlops.dev/holdout"] == "separate-dataset"
