"""The default validation Job: evaluate a registered model on a holdout set, log the metrics.

Run as ``python -m mlops_runtime.evaluate`` (the default command of
``ModelVersion.spec.validation.job``) or ``mlops-runtime evaluate``. It reads its inputs from the
environment the operator sets on the Job — ``MLOPS_MODEL_URI`` (or ``MODEL_URI``;
``models:/<name>/<version>``), ``MLFLOW_RUN_ID`` (the version's run, where the metrics go),
``MLFLOW_TRACKING_URI`` and ``DATASET_URI`` — or from the command line, loads the model with
``mlflow.pyfunc``, and logs ``<prefix>accuracy``, ``<prefix>f1_macro`` and per-class
``<prefix>accuracy_class_<label>`` (the recall of each class) into the run, so that the gates can
check them.

Which rows are the holdout (``mlops.dev/holdout`` tag on the run says which rule applied):

* ``training-split``: the version's run was made by the reference trainer, which records its
  split (``split/holdout.json``: the dataset's content digest and the positions of the held-out
  rows). When the dataset to evaluate is that same dataset (same digest) — or no dataset is
  given, and the run's own is read again — the holdout is exactly the rows the trainer held
  out, never a row the model was fitted on.
* ``separate-dataset``: a file (CSV, Parquet, JSON lines; a path or any fsspec URL) other than
  the training data is the holdout as a whole; its ``--target`` column (default: the last
  column) holds the labels.
* ``fixed-split-unverified``: a built-in set (``sklearn://iris``, ``wine``, ``breast_cancer``,
  ``digits``) for a run that records no split of it (a model trained elsewhere): the fixed
  stratified 30 % split. The evaluator cannot know which rows such a model saw; give it a
  separate holdout file to be sure.

Datasets are read by the trainer's loader, :func:`mlops_runtime.datasets.load_dataset`.
On failure the reason is written to the termination log, which the operator copies into the
ModelVersion's status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlops_runtime.datasets import (
    SKLEARN_SCHEMES,
    DvcLocation,
    LoadedDataset,
    load_dataset,
    split_scheme,
)
from mlops_runtime.termination import write_termination_message
from mlops_runtime.train_logging import SPLIT_ARTIFACT

DEFAULT_PREFIX = "holdout_"
DEFAULT_DATASET = "sklearn://iris"
HOLDOUT_FRACTION = 0.3
TAG_HOLDOUT = "mlops.dev/holdout"
TAG_HOLDOUT_ROWS = "mlops.dev/holdout-rows"


@dataclass
class Holdout:
    """Features and labels to evaluate on; ``class_names`` when the labels are class names of
    integer-coded classes (scikit-learn's built-in sets), in code order."""

    x: Any
    y: Any
    class_names: tuple[str, ...] | None = None
    #: which rule chose the rows: training-split, separate-dataset or fixed-split-unverified
    kind: str = "separate-dataset"


def load_holdout(uri: str | None, target: str | None = None,
                 split: dict[str, Any] | None = None) -> Holdout:  # fmt: skip
    """The holdout of ``uri`` (see the module docstring); ``split`` is the trainer's record of
    the run's split, ``uri`` None means the run's own training dataset."""
    if uri is None and split is None:
        uri = DEFAULT_DATASET
    if uri is None:
        assert split is not None
        dvc = DvcLocation(**split["dvc"]) if split.get("dvc") else None
        ds = load_dataset(split["datasetUri"], dvc=dvc)
    else:
        ds = load_dataset(uri)
    if split is not None and ds.digest == split.get("datasetDigest"):
        return _training_split(ds, target or split.get("target"), split)
    if uri is None:
        raise ValueError(f"the run's dataset {ds.uri} changed since training (digest "
                         f"{ds.digest}, trained on {split.get('datasetDigest')}); "
                         "give a holdout dataset")  # fmt: skip
    frame = ds.frame
    column = _target(ds, target)
    x, y = frame.drop(columns=[column]), frame[column]
    if split_scheme(uri)[0] not in SKLEARN_SCHEMES:
        return Holdout(x, y)
    from sklearn.model_selection import train_test_split

    names = ds.class_names
    # stratify by the integer class codes, so the split is the same as on scikit-learn's own
    # numeric labels whatever order the names sort in
    strata = [names.index(v) for v in y] if names else y
    _, x_test, _, y_test = train_test_split(
        x, y, test_size=HOLDOUT_FRACTION, random_state=0, stratify=strata
    )
    return Holdout(x_test, y_test, names, "fixed-split-unverified")


def _target(ds: LoadedDataset, target: str | None) -> str:
    column = target or ds.default_target or str(ds.frame.columns[-1])
    if column not in ds.frame.columns:
        raise ValueError(f"target column {column!r} not in {ds.uri}")
    return column


def _training_split(ds: LoadedDataset, target: str | None, split: dict[str, Any]) -> Holdout:
    """The rows the trainer held out of ``ds`` (the very table it trained on)."""
    rows = [int(i) for i in split.get("holdoutRows") or []]
    if not rows or min(rows) < 0 or max(rows) >= len(ds.frame):
        raise ValueError(f"the run's recorded split does not fit {ds.uri} "
                         f"({len(rows)} holdout rows of {len(ds.frame)})")  # fmt: skip
    frame = ds.frame.iloc[rows]
    column = _target(ds, target)
    frame = frame.dropna(subset=[column])  # the trainer drops unlabelled rows too
    return Holdout(frame.drop(columns=[column]), frame[column], ds.class_names,
                   "training-split")


def training_split(client: Any, run_id: str) -> dict[str, Any] | None:
    """The split the reference trainer recorded in ``run_id``, None when it recorded none."""
    import json

    folder = SPLIT_ARTIFACT.rsplit("/", 1)[0]
    if SPLIT_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlops-split-") as tmp:
        path = client.download_artifacts(run_id, SPLIT_ARTIFACT, tmp)
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    return record if isinstance(record, dict) else None


def align_labels(holdout: Holdout, predicted: Sequence[Any]) -> list[Any]:
    """The true labels in the model's vocabulary.

    scikit-learn's built-in sets label classes 0..n-1, which the loader turns into class names;
    the reference trainer (and many users) train on the names, others on the numbers. When the
    model predicts numbers and the labels are names with known codes, compare codes.
    """
    labels = list(holdout.y)
    names = holdout.class_names
    if names and predicted and not isinstance(predicted[0], str) and isinstance(labels[0], str):
        code = {name: i for i, name in enumerate(names)}
        return [code[v] for v in labels]
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


def evaluate_and_log(model_uri: str, run_id: str, dataset: str | None, target: str | None,
                     prefix: str) -> dict[str, float]:  # fmt: skip
    """Predict the holdout with the model, log the metrics into ``run_id``, return them.

    ``dataset`` None: the run's own training dataset (its recorded holdout rows)."""
    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    holdout = load_holdout(dataset, target, training_split(client, run_id))
    if holdout.kind == "fixed-split-unverified":
        print(f"warning: run {run_id} records no split of {dataset}: the fixed 30 % split may "
              "hold rows the model was trained on", file=sys.stderr)  # fmt: skip
    model = mlflow.pyfunc.load_model(model_uri)
    predicted = list(model.predict(holdout.x))
    metrics = compute_metrics(align_labels(holdout, predicted), predicted, prefix)
    now = int(time.time() * 1000)
    tags = [RunTag(TAG_HOLDOUT, holdout.kind), RunTag(TAG_HOLDOUT_ROWS, str(len(holdout.y)))]
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=tags)
    return metrics


def _terminate(message: str) -> None:
    write_termination_message(message)
    print(message, file=sys.stderr)


def _parser(prog: str) -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--model-uri", default=env.get("MLOPS_MODEL_URI") or env.get("MODEL_URI"))
    parser.add_argument("--run-id", default=env.get("MLFLOW_RUN_ID"))
    parser.add_argument("--dataset", default=env.get("DATASET_URI") or None,
                        help="holdout dataset (default: the run's own training dataset, "
                        f"else {DEFAULT_DATASET})")
    parser.add_argument("--target", default=None, help="label column of a file dataset")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="metric name prefix")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m mlops_runtime.evaluate") -> int:
    """Evaluate, log, return the exit code (2: missing inputs, 1: evaluation failed)."""
    args = _parser(prog).parse_args(argv)
    if not args.model_uri or not args.run_id:
        _terminate("evaluate: MLOPS_MODEL_URI and MLFLOW_RUN_ID are required")
        return 2
    try:
        metrics = evaluate_and_log(args.model_uri, args.run_id, args.dataset, args.target,
                                   args.prefix)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - every failure becomes the termination message
        where = args.dataset or "the run's dataset"
        _terminate(f"evaluation of {args.model_uri} on {where} failed: "
                   f"{type(exc).__name__}: {exc}")  # fmt: skip
        return 1
    for key, value in sorted(metrics.items()):
        print(f"{key}={value:.6g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
