"""Model loading: native sklearn flavor, pyfunc fallback, URI parsing and failures."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from mlops_runtime.model import ModelLoadError, load_model, parse_model_uri


def test_parse_model_uris() -> None:
    assert parse_model_uri("models:/iris/3").version == "3"
    ref = parse_model_uri("models:/iris@champion")
    assert (ref.name, ref.alias, ref.version) == ("iris", "champion", None)
    assert not parse_model_uri("/tmp/model").is_registry
    assert parse_model_uri("file:///tmp/model").uri == "/tmp/model"
    for bad in ("models:/iris", "models:/iris/latest", "models:/a/b/c"):
        with pytest.raises(ModelLoadError):
            parse_model_uri(bad)


def test_native_sklearn_flavor_on_numpy(iris_model_dir, iris) -> None:  # noqa: ANN001
    model = load_model(str(iris_model_dir))
    X, y, _ = iris
    assert model.platform == "mlflow-sklearn" and model.name == "model"
    estimator = model.methods["predict"].__wrapped__.__self__  # under _finite's wrapper
    assert type(estimator).__name__ == "LogisticRegression"
    assert (model.methods["predict"](X) == y).mean() > 0.9
    assert model.spec.n_features == 4


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return model_input.sum(axis=1) * 2


def test_pyfunc_fallback_with_column_signature(tmp_path) -> None:  # noqa: ANN001
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    path = tmp_path / "doubler"
    mlflow.pyfunc.save_model(str(path), python_model=_Doubler(),
                             signature=infer_signature(frame, np.array([8.0, 12.0])))  # fmt: skip
    model = load_model(str(path), "doubler")
    assert model.platform == "mlflow-pyfunc"
    assert model.spec.names == ("a", "b") and model.spec.n_features == 2
    assert model.methods["predict"](np.array([[1.0, 3.0]])).tolist() == [8.0]
    assert model.parameters["feature_names"] == ["a", "b"]


def test_pyfunc_named_inputs_over_http(tmp_path) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient
    from mlflow.models import infer_signature

    from mlops_runtime.dataplane import DataPlane
    from mlops_runtime.rest import create_app
    from mlops_runtime.settings import RuntimeSettings

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    path = tmp_path / "doubler"
    mlflow.pyfunc.save_model(str(path), python_model=_Doubler(),
                             signature=infer_signature(frame, np.array([8.0, 12.0])))  # fmt: skip
    settings = RuntimeSettings(model_uri=str(path), model_name="doubler")
    plane = DataPlane(settings)
    plane.install(load_model(str(path), "doubler"))
    with TestClient(create_app(settings, plane)) as c:
        inputs = [
            {"name": "b", "shape": [2], "datatype": "FP64", "data": [3.0, 4.0]},
            {"name": "a", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
        ]
        r = c.post("/v2/models/doubler/infer", json={"inputs": inputs})
        assert r.json()["outputs"][0]["data"] == [8.0, 12.0]
        r = c.post("/predict", json={"instances": [{"a": 1, "b": 3}, {"b": 0, "a": 0}]})
        assert r.json()["predictions"] == [8.0, 0.0]
        bad = c.post("/v2/models/doubler/infer", json={"inputs": inputs[:1]})
        assert bad.status_code == 400 and "missing inputs ['a']" in bad.json()["error"]


def test_load_failures_say_why(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError, match="no MLmodel"):
        load_model(str(tmp_path))
    (tmp_path / "MLmodel").write_text("flavors: {sklearn: {pickled_model: gone.pkl}}\n")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(str(tmp_path))


def test_the_finiteness_scan_is_skipped_in_whichever_thread_predicts(iris_model_dir) -> None:  # noqa: ANN001
    """The data plane rejects NaN/inf itself, so predictions skip scikit-learn's scan. Its config
    is per thread: it must hold in the thread that predicts (the event loop's, or the predict
    thread), not only in the thread that loaded the model."""
    import threading

    import sklearn

    model = load_model(str(iris_model_dir), "iris")
    outcome: list[object] = []

    def predict_elsewhere() -> None:
        try:
            outcome.append(model.methods["predict"](np.array([[np.nan, 1.0, 1.0, 1.0]])))
        except ValueError as exc:  # sklearn's "Input X contains NaN"
            outcome.append(exc)

    thread = threading.Thread(target=predict_elsewhere)
    thread.start()
    thread.join()
    assert isinstance(outcome[0], np.ndarray), outcome
    # and nothing leaks into the caller's own config
    assert sklearn.get_config()["assume_finite"] is False
