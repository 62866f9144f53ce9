"""``mlops-runtime train`` end to end against an in-process sqlite MLflow store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_runtime.train import main

IRIS_CSV = Path(__file__).resolve().parents[3] / "examples" / "iris" / "data" / "iris.csv"


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for var in ("MLFLOW_RUN_ID", "MLOPS_PARAMS", "DATASET_URI", "MLOPS_LOCAL_TERMINATION_LOG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cli")
    monkeypatch.chdir(tmp_path)  # local artifacts land here
    return MlflowClient(tracking_uri=uri)


def _only_run(client: Any) -> Any:
    exp = client.get_experiment_by_name("cli")
    (run,) = client.search_runs([exp.experiment_id])
    return run


def test_bad_dataset_exits_2_with_one_clear_line(
    tracking: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    term = tmp_path / "termination-log"
    monkeypatch.setenv("MLOPS_LOCAL_TERMINATION_LOG", str(term))
    assert main(["--dataset", "nosuch://x.csv"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mlops-runtime train: dataset error: unknown dataset URI scheme")
    assert term.read_text() == last.removeprefix("mlops-runtime train: ")
    assert _only_run(tracking).info.status == "FAILED"


def test_bad_param_exits_1(
    tracking: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_PARAMS", '{"C": "-1"}')
    assert main(["--dataset", "sklearn://iris"]) == 1
    assert "'C' parameter of LogisticRegression" in capsys.readouterr().err
    assert _only_run(tracking).info.status == "FAILED"


def test_csv_training_logs_everything(tracking: Any) -> None:
    assert (
        main(
            [
                "--dataset",
                str(IRIS_CSV),
                "--param",
                "model_type=decision_tree",
                "--param",
                "max_depth=3",
                "--param",
                "slice_columns=sepal_width",
            ]
        )
        == 0
    )
    run = _only_run(tracking)
    assert run.info.status == "FINISHED"
    assert run.data.params["max_depth"] == "3" and run.data.params["target"] == "species"
    assert run.data.tags["mlops.dev/dataset-digest"].startswith("md5:")
    assert "accuracy_class_versicolor" in run.data.metrics
    assert [k for k in run.data.metrics if k.startswith("accuracy_slice_sepal_width_")]
    paths = {a.path for a in tracking.list_artifacts(run.info.run_id, "model")}
    assert {"model/MLmodel", "model/input_example.json"} <= paths
    assert [a.path for a in tracking.list_artifacts(run.info.run_id, "baseline")] == [
        "baseline/histograms.json"
    ]

    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    row = pd.read_csv(IRIS_CSV).drop(columns=["species"]).head(1)
    assert list(model.predict(row)) == ["setosa"]
