"""How the reference trainer records a run in MLflow: the dataset input and the model artifact."""

from __future__ import annotations

import os
from typing import Any

from mlops_runtime.datasets import LoadedDataset

MODEL_ARTIFACT_PATH = "model"


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
