"""The holdout evaluator compares labels in the model's own vocabulary."""

from __future__ import annotations

from mlops_operator.evaluate import align_labels, compute_metrics, load_dataset


def test_numeric_labels_become_names_when_the_model_predicts_names() -> None:
    x, y = load_dataset("sklearn://iris")
    names = align_labels(y, ["setosa"])
    assert set(names) == {"setosa", "versicolor", "virginica"}
    assert len(names) == len(x) == 45


def test_numeric_models_keep_numeric_labels() -> None:
    _, y = load_dataset("sklearn://iris")
    assert set(align_labels(y, [0, 1])) == {0, 1, 2}


def test_perfect_name_predictions_score_one() -> None:
    _, y = load_dataset("sklearn://iris")
    truth = align_labels(y, ["setosa"])
    metrics = compute_metrics(truth, list(truth), "holdout_")
    assert metrics["holdout_accuracy"] == 1.0
