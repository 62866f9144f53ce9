"""The default validation Job: evaluate a registered model on a holdout set, log the metrics.

Run as ``python -m mlops_operator.evaluate`` (the default command of
``ModelVersion.spec.validation.job``). It reads its inputs from the environment the operator
sets on the Job — ``MLOPS_MODEL_URI`` (``models:/<name>/<version>``), ``MLFLOW_RUN_ID`` (the
version's run, where the metrics go), ``MLFLOW_TRACKING_URI`` and ``DATASET_URI`` — or from the
command line, loads the model with ``mlflow.pyfunc``, and logs ``<prefix>accuracy``,
``<prefix>f1_macro`` and per-class ``<prefix>accuracy_class_<label>`` (the recall of each
class) into the run, so that the gates can check them.

Datasets: ``sklearn://iris`` (``wine``, ``breast_cancer``: the built-in sets; the holdout is a
fixed stratified 30 % split), or a CSV path/URL whose ``--target`` column (default: the last
column) holds the labels. On failure the reason is written to the termination log, which the
operator copies into the ModelVersion's status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "holdout_"
TERMINATION_LOG = "/dev/termination-log"


def load_dataset(uri: str, target: str | None = None) -> tuple[Any, Any]:
    """The holdout features and labels of ``uri`` (``sklearn://<name>`` or a CSV)."""
    if uri.startswith("sklearn://"):
        from sklearn import datasets
        from sklearn.model_selection import train_test_split

        name = uri[len("sklearn://"):].strip("/")
        loader = getattr(datasets, f"load_{name}", None)
        if loader is None:
            raise ValueError(f"unknown sklearn dataset {name!r} in {uri}")
        bunch = loader(as_frame=True)
        x, y = bunch.data, bunch.target
        _, x_test, _, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
        y_test.attrs["target_names"] = [str(n) for n in getattr(bunch, "target_names", [])]
        return x_test, y_test
    import pandas as pd

    frame = pd.read_csv(uri[len("file://"):] if uri.startswith("file://") else uri)
    column = target or str(frame.columns[-1])
    if column not in frame.columns:
        raise ValueError(f"target column {column!r} not in {uri}")
    return frame.drop(columns=[column]), frame[column]


def align_labels(y: Any, predicted: Sequence[Any]) -> list[Any]:
    """The true labels in the model's vocabulary.

    scikit-learn's built-in sets label classes 0..n-1; the reference trainer (and many users)
    train on the class names instead. When the model predicts names and the labels are numbers
    with known names, compare names.
    """
    labels = list(y)
    names = list(getattr(y, "attrs", {}).get("target_names") or [])
    if names and predicted and isinstance(predicted[0], str) and not isinstance(labels[0], str):
        return [names[int(v)] for v in labels]
    return labels


def compute_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], prefix: str) -> dict[str, float]:
    """Accuracy, macro F1 and per-class accuracy (recall) with ``prefix``."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    labels = sorted({str(v) for v in y_true})
    true = [str(v) for v in y_true]
    pred = [str(v) for v in y_pred]
    out = {
        f"{prefix}accuracy": float(accuracy_score(true, pred)),
        f"{prefix}f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
    }
    recalls = recall_score(true, pred, labels=labels, average=None, zero_division=0)
    for label, value in zip(labels, recalls, strict=True):
        out[f"{prefix}accuracy_class_{label}"] = float(value)
    return out


def _terminate(message: str) -> None:
    path = os.environ.get("MLOPS_LOCAL_TERMINATION_LOG", TERMINATION_LOG)
    with contextlib.suppress(OSError):
        Path(path).write_text(message[:4000])
    print(message, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, log, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m mlops_operator.evaluate")
    parser.add_argument("--model-uri", default=os.environ.get("MLOPS_MODEL_URI")
                        or os.environ.get("MODEL_URI"))
    parser.add_argument("--run-id", default=os.environ.get("MLFLOW_RUN_ID"))
    parser.add_argument("--dataset", default=os.environ.get("DATASET_URI", "sklearn://iris"))
    parser.add_argument("--target", default=None, help="label column of a CSV dataset")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="metric name prefix")
    args = parser.parse_args(argv)
    if not args.model_uri or not args.run_id:
        _terminate("evaluate: MLOPS_MODEL_URI and MLFLOW_RUN_ID are required")
        return 2
    try:
        import mlflow
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        x, y = load_dataset(args.dataset, args.target)
        model = mlflow.pyfunc.load_model(args.model_uri)
        predicted = list(model.predict(x))
        metrics = compute_metrics(align_labels(y, predicted), predicted, args.prefix)
        import time

        now = int(time.time() * 1000)
        MlflowClient().log_batch(
            args.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()]
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes the termination message
        _terminate(f"evaluation of {args.model_uri} on {args.dataset} failed: "
                   f"{type(exc).__name__}: {exc}")
        return 1
    for key, value in sorted(metrics.items()):
        print(f"{key}={value:.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
