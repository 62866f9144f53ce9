"""How the reference trainer records a run in MLflow: the dataset input, the train/holdout split
and the model artifact."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mlops_runtime.datasets import DvcLocation, LoadedDataset

MODEL_ARTIFACT_PATH = "model"
#: The trainer's split, read back by the holdout evaluator (:mod:`mlops_runtime.evaluate`).
SPLIT_ARTIFACT = "split/holdout.json"


def log_dataset(mlflow: Any, ds: LoadedDataset, target: str) -> None:
    """Log ``ds`` as the run's training dataset input (its digest is the content md5)."""
    from mlflow.data.pandas_dataset import from_pandas

    try:
        dataset = from_pandas(
            ds.frame, source=ds.uri, targets=target, name=ds.name, digest=ds.digest_hex[:36]
        )
    except Exception:  # a source URI MLflow cannot classify: record it as a code source
        from mlflow.data.code_dataset_source import CodeDatasetSource

        dataset = from_pandas(
            ds.frame,
            source=CodeDatasetSource({"uri": ds.uri}),
            targets=target,
            name=ds.name,
            digest=ds.digest_hex[:36],
        )
    tags = {"uri": ds.uri, "digest": ds.digest}
    if ds.version:
        tags["version"] = ds.version
    mlflow.log_input(dataset, context="training", tags=tags)


def split_record(ds: LoadedDataset, dvc: DvcLocation | None, target: str,
                 holdout_rows: Sequence[int], seed: int, test_size: float,
                 stratified: bool) -> dict[str, Any]:  # fmt: skip
    """The split as :data:`SPLIT_ARTIFACT` records it: which dataset (URI, DVC location, content
    digest) and the positions of its held-out rows in the loaded table (0-based)."""
    return {
        "datasetUri": ds.uri,
        "datasetDigest": ds.digest,
        "dvc": {"repo": dvc.repo, "path": dvc.path, "rev": dvc.rev} if dvc else None,
        "target": target,
        "rows": len(ds.frame),
        "seed": seed,
        "testSize": test_size,
        "stratified": stratified,
        "holdoutRows": sorted(int(i) for i in holdout_rows),
    }


def _trusted_types(model: Any) -> dict[str, Any]:
    """``skops_trusted_types`` for a model we trained ourselves (MLflow 3 saves sklearn models
    with skops, which refuses e.g. tree node storage unless it is named as trusted)."""
    import inspect

    import mlflow.sklearn

    if "skops_trusted_types" not in inspect.signature(mlflow.sklearn.save_model).parameters:
        return {}
    try:
        import skops.io as sio
    except ImportError:
        return {}
    return {"skops_trusted_types": sio.get_untrusted_types(data=sio.dumps(model))}


def log_model(mlflow: Any, model: Any, example: Any, signature: Any) -> None:
    """Log ``model`` as plain run artifacts under ``model/`` (sklearn flavor).

    MLflow 3's ``log_model`` stores the files under a LoggedModel, outside the run's artifact
    tree, and a registry version created from ``runs:/<id>/model`` then has nothing to
    download. Saving the model and logging the directory keeps ``runs:/<id>/model`` a real
    artifact location on MLflow 2 and 3 alike.
    """
    import tempfile

    import mlflow.sklearn

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        path = os.path.join(tmp, MODEL_ARTIFACT_PATH)
        mlflow.sklearn.save_model(
            model,
            path,
            signature=signature,
            input_example=example,
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(),
            **_trusted_types(model),
        )
        mlflow.log_artifacts(path, MODEL_ARTIFACT_PATH)
