"""MLflow helpers against a real (sqlite-backed, in-process) MLflow store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_operator.tracking import end_run, ensure_experiment, ensure_run, run_metrics


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlflow.tracking import MlflowClient

    db: Path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def test_experiment_is_created_once_and_restored(client: Any) -> None:
    exp = ensure_experiment(client, "exp-a")
    assert ensure_experiment(client, "exp-a") == exp
    client.delete_experiment(exp)
    assert ensure_experiment(client, "exp-a") == exp
    assert client.get_experiment(exp).lifecycle_stage == "active"


def test_run_is_found_by_uid_instead_of_created_again(client: Any) -> None:
    exp = ensure_experiment(client, "exp-b")
    tags = {"mlops.dev/uid": "uid-1", "mlops.dev/trainingrun": "ns/t"}
    run, created = ensure_run(client, exp, "uid-1", "t", tags, {"C": "0.5"})
    again, created_again = ensure_run(client, exp, "uid-1", "t", tags, {"C": "0.5"})
    assert created and not created_again
    assert again.info.run_id == run.info.run_id
    assert again.data.params == {"C": "0.5"}
    other, created_other = ensure_run(client, exp, "uid-2", "t", {"mlops.dev/uid": "uid-2"})
    assert created_other and other.info.run_id != run.info.run_id


def test_end_run_only_ends_active_runs(client: Any) -> None:
    exp = ensure_experiment(client, "exp-c")
    run, _ = ensure_run(client, exp, "uid-3", "t", {"mlops.dev/uid": "uid-3"})
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    client.log_metric(run.info.run_id, "loss", float("nan"))
    assert end_run(client, run.info.run_id, "FINISHED")
    assert not end_run(client, run.info.run_id, "KILLED")
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert run_metrics(finished) == {"accuracy": 0.9}
