"""The reference trainer: ``mlops-runtime train`` — scikit-learn classification into MLflow.

The default command of the training Jobs a TrainingRun creates. It resumes the MLflow run the
operator created (``MLFLOW_RUN_ID``), trains a classifier on a dataset URI, and logs:

* params: the effective trainer settings and estimator hyperparameters not logged yet;
* metrics on the held-out split: ``accuracy``, ``f1_macro``, ``precision_macro``,
  ``recall_macro``, ``log_loss``, ``train_accuracy``, and per class ``accuracy_class_<label>``,
  ``recall_class_<label>``, ``precision_class_<label>``, ``f1_class_<label>``; per slice of
  each ``slice_columns`` column ``accuracy_slice_<column>_<value>`` (and ``recall_slice_...``);
* the model under the artifact path ``model`` (sklearn flavor, signature, input example), so
  ``runs:/<run_id>/model`` registers it;
* the dataset as an MLflow dataset input whose digest is the content md5, plus the tags
  ``mlops.dev/dataset-digest`` / ``mlops.dev/dataset-uri``;
* per-feature baseline histograms, ``baseline/histograms.json`` (:mod:`mlops_runtime.drift`);
* the split, ``split/holdout.json``: the dataset's digest and the positions of the held-out
  rows, so that the holdout evaluator scores exactly the rows the model never saw.

Configuration (flags override the environment; the names are documented in docs/training.md):

=========================  ==================================================================
``MLFLOW_TRACKING_URI``     tracking server
``MLFLOW_RUN_ID``           run to resume (else a new run in ``MLFLOW_EXPERIMENT_NAME``)
``MLOPS_PARAMS``            JSON object of params (strings), as the operator passes them
``PARAM_<NAME>``            one param each (used when ``MLOPS_PARAMS`` is not set)
``DATASET_URI``             dataset URI (``MLOPS_DATASET_URI`` is accepted too)
``DATASET_VERSION``         dataset version label
``MLOPS_DVC_REPO/PATH/REV`` read the dataset through DVC instead
=========================  ==================================================================

Exit codes: 0 success, 2 dataset error, 1 training error; the one-line reason is the last line
on stderr and is written to the termination message file when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .datasets import DatasetError, DvcLocation, LoadedDataset, load_dataset
from .termination import write_termination_message
from .train_logging import SPLIT_ARTIFACT, log_dataset, log_model, split_record

TAG_DATASET_DIGEST = "mlops.dev/dataset-digest"
TAG_DATASET_URI = "mlops.dev/dataset-uri"
BASELINE_ARTIFACT = "baseline/histograms.json"

#: Params the trainer itself consumes (everything else may be an estimator hyperparameter).
TRAINER_PARAMS = (
    "model_type",
    "target",
    "test_size",
    "seed",
    "slice_columns",
    "features",
    "sleep_seconds",
)
MODEL_TYPES = ("logistic_regression", "random_forest", "decision_tree")
DEFAULTS: dict[str, str] = {"model_type": "logistic_regression", "test_size": "0.25", "seed": "42"}


class TrainingError(Exception):
    """Training cannot proceed (bad params, bad target column, ...)."""


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


def params_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Params from ``MLOPS_PARAMS`` (a JSON object), else from ``PARAM_<NAME>`` variables."""
    raw = env.get("MLOPS_PARAMS")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise TrainingError(f"MLOPS_PARAMS is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise TrainingError("MLOPS_PARAMS must be a JSON object")
        return {str(k): str(v) for k, v in parsed.items()}
    return {k[len("PARAM_") :].lower(): v for k, v in env.items() if k.startswith("PARAM_")}


def coerce(value: str) -> Any:
    """Turn a param string into the Python value an estimator expects."""
    text = value.strip()
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def metric_key(text: str) -> str:
    """A label or column value as it may appear in an MLflow metric name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text)).strip("_") or "_"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-runtime train", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", help="dataset URI (default: $DATASET_URI)")
    p.add_argument("--dataset-version", help="dataset version label (default: $DATASET_VERSION)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--run-id", help="MLflow run to resume (default: $MLFLOW_RUN_ID)")
    p.add_argument("--experiment", help="experiment of a new run (default: $MLFLOW_EXPERIMENT_NAME)")
    p.add_argument("--model", help="registered model name (recorded as a tag only)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a param, overriding the environment (repeatable)")  # fmt: skip
    return p


# ---------------------------------------------------------------------------------------------
# training (pure: no MLflow)
# ---------------------------------------------------------------------------------------------


def make_estimator(params: Mapping[str, str]) -> tuple[Any, dict[str, Any], list[str]]:
    """The estimator of ``model_type`` with the params it accepts; also the unused param names."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    model_type = params.get("model_type", DEFAULTS["model_type"])
    seed = int(coerce(params.get("seed", DEFAULTS["seed"])))
    if model_type == "logistic_regression":
        est: Any = LogisticRegression(max_iter=1000)
    elif model_type == "random_forest":
        est = RandomForestClassifier(n_estimators=100, random_state=seed)
    elif model_type == "decision_tree":
        est = DecisionTreeClassifier(random_state=seed)
    else:
        raise TrainingError(
            f"unknown model_type {model_type!r}; use one of {', '.join(MODEL_TYPES)}"
        )
    accepted = set(est.get_params())
    chosen = {k: coerce(v) for k, v in params.items() if k in accepted}
    unused = sorted(k for k in params if k not in accepted and k not in TRAINER_PARAMS)
    est.set_params(**chosen)
    return est, chosen, unused


def split_features(ds: LoadedDataset, params: Mapping[str, str]) -> tuple[Any, Any, list[str], str]:
    """``(X, y, feature_names, target)``: numeric features and the label column."""
    frame = ds.frame
    target = params.get("target") or ds.default_target
    if target is None:
        target = "target" if "target" in frame.columns else str(frame.columns[-1])
    if target not in frame.columns:
        raise TrainingError(
            f"target column {target!r} not in dataset columns {list(map(str, frame.columns))}"
        )
    if params.get("features"):
        features = [f.strip() for f in params["features"].split(",") if f.strip()]
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise TrainingError(f"feature columns {missing} not in dataset")
    else:
        features = [str(c) for c in frame.columns if c != target and frame[c].dtype.kind in "biuf"]
    if not features:
        raise TrainingError("the dataset has no numeric feature columns")
    frame = frame.dropna(subset=[target])
    if frame[target].nunique() < 2:
        raise TrainingError(f"target column {target!r} needs at least two classes")
    return frame[features], frame[target], features, target


def _slice_groups(column: Any) -> Any:
    """Values to slice by: the values themselves, or quartile bins when there are many."""
    import pandas as pd

    if column.dtype.kind in "biuf" and column.nunique() > 20:
        return pd.qcut(column, 4, duplicates="drop").astype(str)
    return column.astype(str)


def evaluate(
    model: Any,
    X_test: Any,
    y_test: Any,
    X_train: Any,
    y_train: Any,
    slices: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Held-out metrics, per-class metrics and per-slice metrics (see the module docstring)."""
    import numpy as np
    from sklearn import metrics as m

    pred = model.predict(X_test)
    out: dict[str, float] = {
        "accuracy": m.accuracy_score(y_test, pred),
        "f1_macro": m.f1_score(y_test, pred, average="macro", zero_division=0),
        "precision_macro": m.precision_score(y_test, pred, average="macro", zero_division=0),
        "recall_macro": m.recall_score(y_test, pred, average="macro", zero_division=0),
        "train_accuracy": m.accuracy_score(y_train, model.predict(X_train)),
        "n_train": float(len(y_train)),
        "n_test": float(len(y_test)),
    }
    if hasattr(model, "predict_proba"):
        out["log_loss"] = m.log_loss(y_test, model.predict_proba(X_test), labels=model.classes_)
    labels = list(model.classes_)
    prec, rec, f1, _ = m.precision_recall_fscore_support(
        y_test, pred, labels=labels, zero_division=0
    )
    y_arr, p_arr = np.asarray(y_test), np.asarray(pred)
    for i, label in enumerate(labels):
        key = metric_key(label)
        in_class = y_arr == label
        if in_class.any():  # accuracy within the class (= its recall)
            out[f"accuracy_class_{key}"] = float((p_arr[in_class] == label).mean())
        out[f"recall_class_{key}"] = float(rec[i])
        out[f"precision_class_{key}"] = float(prec[i])
        out[f"f1_class_{key}"] = float(f1[i])
    for column, values in (slices or {}).items():
        groups = np.asarray(_slice_groups(values))
        for group in sorted(set(groups)):
            mask = groups == group
            key = f"{metric_key(column)}_{metric_key(group)}"
            out[f"accuracy_slice_{key}"] = float((p_arr[mask] == y_arr[mask]).mean())
            out[f"recall_slice_{key}"] = float(
                m.recall_score(y_arr[mask], p_arr[mask], average="macro", zero_division=0)
            )
    return {k: float(v) for k, v in out.items()}


def baseline_histograms(X: Any, feature_names: Sequence[str]) -> dict:
    """Per-feature histograms of the training features (the serving runtime's drift baseline)."""
    from .drift import compute_baseline

    return compute_baseline(X.to_numpy(dtype="float64"), list(feature_names), bins=10)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def _fail(code: int, message: str) -> int:
    line = " ".join(message.split())
    sys.stdout.flush()
    print(f"mlops-runtime train: {line}", file=sys.stderr, flush=True)
    write_termination_message(line)
    return code


@dataclass
class _Inputs:
    """What one training run reads: params and where the dataset is."""

    params: dict[str, str]
    uri: str | None
    version: str | None
    dvc: DvcLocation | None


def _inputs(args: argparse.Namespace, env: Mapping[str, str]) -> _Inputs:
    """Params (flags over the environment) and the dataset location."""
    params = params_from_env(env)
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise TrainingError(f"--param {item!r} must be NAME=VALUE")
        params[name] = value
    uri = args.dataset or env.get("DATASET_URI") or env.get("MLOPS_DATASET_URI")
    version = args.dataset_version or env.get("DATASET_VERSION") or env.get("MLOPS_DATASET_VERSION")
    dvc = None
    if env.get("MLOPS_DVC_REPO") and env.get("MLOPS_DVC_PATH"):
        dvc = DvcLocation(env["MLOPS_DVC_REPO"], env["MLOPS_DVC_PATH"], env.get("MLOPS_DVC_REV"))
    return _Inputs(params, uri, version, dvc)


@dataclass
class _Trained:
    """A fitted estimator with what the run logs about it."""

    estimator: Any
    chosen: dict[str, Any]
    results: dict[str, float]
    X_train: Any
    features: list[str]
    target: str
    #: the split: positions of the held-out rows in the dataset's table, and how it was drawn
    holdout_rows: list[int]
    seed: int
    test_size: float
    stratified: bool


def _train(ds: LoadedDataset, params: Mapping[str, str]) -> _Trained:
    """Split, fit and evaluate (no MLflow)."""
    from sklearn.model_selection import train_test_split

    X, y, features, target = split_features(ds, params)
    seed = int(coerce(params.get("seed", DEFAULTS["seed"])))
    test_size = float(coerce(params.get("test_size", DEFAULTS["test_size"])))
    stratify = y if y.value_counts().min() >= 2 else None
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=stratify
    )
    est, chosen, unused = make_estimator(params)
    if unused:
        print(f"warning: params not used by {type(est).__name__}: {unused}", file=sys.stderr)
    est.fit(X_train, y_train)
    slice_cols = [c.strip() for c in params.get("slice_columns", "").split(",") if c.strip()]
    missing = [c for c in slice_cols if c not in ds.frame.columns]
    if missing:
        raise TrainingError(f"slice columns {missing} not in dataset")
    test_rows = ds.frame.loc[X_test.index]
    results = evaluate(
        est, X_test, y_test, X_train, y_train, {c: test_rows[c] for c in slice_cols}
    )
    holdout_rows = [int(i) for i in ds.frame.index.get_indexer(X_test.index)]
    return _Trained(est, chosen, results, X_train, features, target, holdout_rows, seed,
                    test_size, stratify is not None)


def _log_run(mlflow: Any, run_id: str, ds: LoadedDataset, params: Mapping[str, str],
             trained: _Trained, model_name: str | None,
             dvc: DvcLocation | None = None) -> None:  # fmt: skip
    """Params not logged yet, metrics, tags, the dataset input, the split, the baseline and the
    model."""
    from mlflow.models import infer_signature

    est = trained.estimator
    logged = set(mlflow.get_run(run_id).data.params)
    chosen = {k: str(v) for k, v in trained.chosen.items()}
    effective = {**DEFAULTS, "target": trained.target, **params, **chosen}
    effective.setdefault("estimator", type(est).__name__)
    mlflow.log_params({k: v for k, v in effective.items() if k not in logged})
    mlflow.log_metrics(trained.results)
    tags = {TAG_DATASET_DIGEST: ds.digest, TAG_DATASET_URI: ds.uri}
    mlflow.set_tags({**tags, **({"mlops.dev/model": model_name} if model_name else {})})
    log_dataset(mlflow, ds, trained.target)
    mlflow.log_dict(split_record(ds, dvc, trained.target, trained.holdout_rows, trained.seed,
                                 trained.test_size, trained.stratified), SPLIT_ARTIFACT)
    mlflow.log_dict(baseline_histograms(trained.X_train, trained.features), BASELINE_ARTIFACT)
    example = trained.X_train.head(5)
    log_model(mlflow, est, example, infer_signature(example, est.predict(example)))


def run_training(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Load, train, evaluate and log one run; returns the process exit code."""
    import mlflow

    try:
        inputs = _inputs(args, env)
    except TrainingError as exc:
        return _fail(1, str(exc))
    tracking_uri = args.tracking_uri or env.get("MLFLOW_TRACKING_URI")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    run_id = args.run_id or env.get("MLFLOW_RUN_ID")
    if not run_id:
        mlflow.set_experiment(args.experiment or env.get("MLFLOW_EXPERIMENT_NAME") or "default")
    run = mlflow.start_run(run_id=run_id)
    params = inputs.params
    status, code, reason = "FAILED", 1, ""
    try:
        if params.get("sleep_seconds"):  # test hook: a slow "training"
            time.sleep(float(params["sleep_seconds"]))
        ds = load_dataset(inputs.uri, inputs.version, inputs.dvc)
        print(f"dataset {ds.uri}: {len(ds.frame)} rows, digest {ds.digest}", flush=True)
        trained = _train(ds, params)
        _log_run(mlflow, run.info.run_id, ds, params, trained, args.model, inputs.dvc)
        results = trained.results
        print(f"accuracy={results['accuracy']:.4f} f1_macro={results['f1_macro']:.4f}", flush=True)
        status, code = "FINISHED", 0
    except DatasetError as exc:
        code, reason = 2, f"dataset error: {exc}"
    except TrainingError as exc:
        reason = f"training error: {exc}"
    except Exception as exc:  # sklearn's parameter validation, fit errors, MLflow errors
        reason = f"training failed: {type(exc).__name__}: {exc}"
    finally:
        mlflow.end_run(status)
    return _fail(code, reason) if code else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mlops-runtime train``."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run_training(args, os.environ)
    except TrainingError as exc:
        return _fail(1, f"training error: {exc}")
    except Exception as exc:  # e.g. MLflow unreachable when resuming the run
        return _fail(1, f"training failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    raise SystemExit(main())
