"""Loading a model from MLflow (registry URI or local directory) into a numpy-in, numpy-out
predictor, using the native scikit-learn flavor when there is one and pyfunc otherwise."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_runtime.codec import FeatureSpec, datatype_of
from mlops_runtime.drift import BASELINE_ARTIFACT, validate_baseline

log = logging.getLogger(__name__)

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w\-]+))$")
_NUMERIC_COLTYPES = {"double", "float", "long", "integer", "boolean"}

Predictor = Callable[[np.ndarray], np.ndarray]


class ModelLoadError(Exception):
    """The model could not be loaded; the message says why."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed model URI: registry name with a version or an alias, or a local path."""

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None

    @property
    def is_registry(self) -> bool:
        """True for ``models:/`` URIs."""
        return self.name is not None


def parse_model_uri(uri: str) -> ModelRef:
    """Parse ``models:/name/3``, ``models:/name@alias`` or a local directory path."""
    if uri.startswith("models:/"):
        match = _REGISTRY_URI.match(uri)
        if not match:
            raise ModelLoadError(
                f"unsupported model URI {uri!r}: use models:/<name>/<version> or models:/<name>@<alias>"
            )
        return ModelRef(uri, match["name"], match["version"], match["alias"])
    path = uri.removeprefix("file://")
    return ModelRef(path)


@dataclass(slots=True)
class LoadedModel:
    """A model ready to predict, with what the metadata endpoint reports."""

    name: str
    version: str | None
    platform: str
    spec: FeatureSpec
    methods: dict[str, Predictor]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    source_uri: str
    alias: str | None = None
    run_id: str | None = None
    baseline: dict | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _resolve(ref: ModelRef) -> tuple[str, str | None]:
    """Resolve a registry reference to (pinned version, run id)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if ref.alias is not None:
        mv = client.get_model_version_by_alias(ref.name, ref.alias)
    else:
        mv = client.get_model_version(ref.name, ref.version)
    return str(mv.version), mv.run_id


def _feature_spec(mlmodel: Any, native: Any) -> FeatureSpec:
    """Feature count, names and kind from the signature, else from the sklearn estimator."""
    signature = getattr(mlmodel, "signature", None)
    if signature is not None and signature.inputs is not None:
        schema = signature.inputs
        if schema.is_tensor_spec():
            spec = schema.inputs[0]
            shape = tuple(spec.shape)
            n = shape[-1] if len(shape) >= 2 and shape[-1] > 0 else None
            dtype = np.dtype(spec.type)
            return FeatureSpec(
                n, None, dtype.kind in "biuf", dtype if dtype.kind == "f" else np.dtype(np.float64)
            )
        names = schema.input_names()
        types = [getattr(t, "name", str(t)) for t in schema.input_types()]
        numeric = all(t in _NUMERIC_COLTYPES for t in types)
        has_names = schema.has_input_names()
        return FeatureSpec(len(types), tuple(names) if has_names else None, numeric)
    n = getattr(native, "n_features_in_", None)
    names = getattr(native, "feature_names_in_", None)
    return FeatureSpec(
        int(n) if n is not None else None,
        tuple(str(x) for x in names) if names is not None else None,
    )


def _to_numpy(result: Any) -> np.ndarray:
    if hasattr(result, "to_numpy"):
        result = result.to_numpy()
    array = np.asarray(result)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return array


def _finite(method: Predictor) -> Predictor:
    """``method`` run without scikit-learn's NaN/inf scan: the data plane already rejects them.
    sklearn's config is thread-local, so it is set around each call, in the thread that
    predicts (the event loop's or the predict thread), and restored after (~3 µs)."""
    import sklearn

    @functools.wraps(method)
    def predict(rows: np.ndarray) -> np.ndarray:
        with sklearn.config_context(assume_finite=True):
            return method(rows)

    return predict


def _sklearn_methods(estimator: Any) -> dict[str, Predictor]:
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    methods: dict[str, Predictor] = {"predict": _finite(estimator.predict)}
    if hasattr(estimator, "predict_proba"):
        methods["predict_proba"] = _finite(estimator.predict_proba)
    return methods


def _pyfunc_methods(pyfunc_model: Any, spec: FeatureSpec) -> dict[str, Predictor]:
    import pandas as pd

    names = list(spec.names) if spec.names else None

    def predict(rows: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(rows, columns=names) if names else rows
        return _to_numpy(pyfunc_model.predict(frame))

    return {"predict": predict}


def _download_baseline(run_id: str) -> dict | None:
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=BASELINE_ARTIFACT, dst_path=tmp
            )
            with open(path, encoding="utf-8") as fh:
                return validate_baseline(json.load(fh))
    except Exception as exc:  # noqa: BLE001 - a missing baseline only disables drift
        log.info("no drift baseline for run %s: %s", run_id, exc)
        return None


def load_model(uri: str, served_name: str | None = None) -> LoadedModel:
    """Download (if needed) and load a model; raises :class:`ModelLoadError` with the reason."""
    ref = parse_model_uri(uri)
    version: str | None = None
    run_id: str | None = None
    try:
        import mlflow
        from mlflow.models import Model

        if ref.is_registry:
            version, run_id = _resolve(ref)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{ref.name}/{version}",
                dst_path=tempfile.mkdtemp(prefix="mlops-runtime-model-"),
            )
        else:
            local = ref.uri
            if not os.path.isfile(os.path.join(local, "MLmodel")):
                raise ModelLoadError(
                    f"{local!r} is not an MLflow model directory (no MLmodel file)"
                )
        mlmodel = Model.load(local)
        run_id = run_id or mlmodel.run_id
        if "sklearn" in mlmodel.flavors:
            import mlflow.sklearn

            native = mlflow.sklearn.load_model(local)
            spec = _feature_spec(mlmodel, native)
            methods = _sklearn_methods(native)
            platform = "mlflow-sklearn"
        else:
            import mlflow.pyfunc

            pyfunc_model = mlflow.pyfunc.load_model(local)
            spec = _feature_spec(mlmodel, None)
            methods = _pyfunc_methods(pyfunc_model, spec)
            platform = "mlflow-pyfunc"
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load {uri}: {type(exc).__name__}: {exc}") from exc

    name = served_name or ref.name or "model"
    outputs = _describe_outputs(methods, spec)
    inputs = [
        {"name": "input-0", "datatype": "FP64" if spec.numeric else "BYTES",
         "shape": [-1, spec.n_features if spec.n_features is not None else -1]},
    ]  # fmt: skip
    baseline = _download_baseline(run_id) if run_id else None
    params: dict[str, Any] = {"source": uri}
    if spec.names:
        params["feature_names"] = list(spec.names)
    if ref.alias:
        params["alias"] = ref.alias
    if run_id:
        params["run_id"] = run_id
    return LoadedModel(
        name=name, version=version, platform=platform, spec=spec, methods=methods,
        inputs=inputs, outputs=outputs, source_uri=uri, alias=ref.alias, run_id=run_id,
        baseline=baseline, parameters=params,
    )  # fmt: skip


def _describe_outputs(methods: dict[str, Predictor], spec: FeatureSpec) -> list[dict[str, Any]]:
    """Output tensor metadata, found by predicting on one all-zero row when the width is known."""
    outputs = []
    for name, fn in methods.items():
        datatype, shape = "FP64", [-1] if name == "predict" else [-1, -1]
        if spec.n_features is not None and spec.numeric:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sample = np.asarray(fn(np.zeros((1, spec.n_features), dtype=spec.dtype)))
                datatype, shape = datatype_of(sample), [-1, *sample.shape[1:]]
            except Exception:  # noqa: BLE001 - metadata stays generic
                pass
        outputs.append({"name": name, "datatype": datatype, "shape": shape})
    return outputs
