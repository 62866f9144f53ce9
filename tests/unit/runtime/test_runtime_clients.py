"""Conformance with real Open Inference Protocol clients: tritonclient over HTTP (binary tensor
data and JSON) and over gRPC, against a whole model server (REST + gRPC, one data plane).

The KServe Python SDK's clients run in a venv of their own: test_runtime_kserve_client.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]  # fmt: skip
# transport and body layout: tritonclient's HTTP client with binary tensor data or JSON, its
# gRPC client (raw contents)
PATHS = ["http-binary", "http-json", "grpc"]


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Values that exercise the datatype's range (extremes included)."""
    from tritonclient.utils import triton_to_np_dtype

    dtype = np.dtype(triton_to_np_dtype(datatype))
    n = int(np.prod(shape))
    if dtype.kind == "b":
        values = np.arange(n) % 2 == 0
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.array([info.min, info.max, 0, 1, info.max // 3, info.min // 2][:n], dtype)
    else:
        values = np.array([-1.5, 0.0, 3.25, 1e3, -2.0e-3, 7.0][:n], dtype)
    return values.astype(dtype).reshape(shape)


class Client:
    """One client path with the calls the tests need, raising InferenceServerException."""

    def __init__(self, path: str, server: Any) -> None:
        self.path = path
        self.binary = path == "http-binary"
        self.mod = tgrpc if path == "grpc" else thttp
        url = server.grpc if path == "grpc" else server.http
        self.client = self.mod.InferenceServerClient(url)

    def infer(self, model: str, arrays: dict[str, tuple[np.ndarray, str]],
              outputs: list[str] | None = None, version: str = "") -> Any:  # fmt: skip
        inputs = []
        for name, (array, datatype) in arrays.items():
            item = self.mod.InferInput(name, list(array.shape), datatype)
            if self.path == "grpc":
                item.set_data_from_numpy(array)
            else:
                item.set_data_from_numpy(array, binary_data=self.binary)
            inputs.append(item)
        if outputs is None:
            requested = None
        elif self.path == "grpc":
            requested = [tgrpc.InferRequestedOutput(o) for o in outputs]
        else:
            requested = [thttp.InferRequestedOutput(o, binary_data=self.binary) for o in outputs]
        return self.client.infer(model, inputs, model_version=version, outputs=requested)


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return request.param


def test_health_and_metadata(module_servers, path: str) -> None:  # noqa: ANN001
    iris = Client(path, module_servers["iris"]).client
    assert iris.is_server_live() is True
    assert iris.is_server_ready() is True
    assert iris.is_model_ready("iris") is True
    meta = iris.get_server_metadata()
    meta = meta if isinstance(meta, dict) else {"name": meta.name, "extensions": meta.extensions}
    assert meta["name"] == "mlops-runtime" and "binary_tensor_data" in meta["extensions"]
    model = iris.get_model_metadata("iris", as_json=True) if path == "grpc" else (
        iris.get_model_metadata("iris"))  # fmt: skip
    assert model["name"] == "iris" and model["platform"] == "mlflow-sklearn"
    assert [o["name"] for o in model["outputs"]] == ["predict", "predict_proba"]
    assert [int(d) for d in model["inputs"][0]["shape"]] == [-1, 4]

    empty = Client(path, module_servers["empty"]).client
    assert empty.is_server_live() is True
    assert empty.is_server_ready() is False
    assert empty.is_model_ready("iris") is False


@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype_round_trips(module_servers, path: str, datatype: str) -> None:  # noqa: ANN001
    array = sample(datatype)
    result = Client(path, module_servers["echo"]).infer(
        "echo", {"input-0": (array, datatype)}, ["predict"]
    )
    out = result.as_numpy("predict")
    assert out.dtype == array.dtype, (datatype, out.dtype)
    np.testing.assert_array_equal(out, array)
    if path != "grpc":
        [meta] = result.get_response()["outputs"]
        assert meta["datatype"] == datatype
        assert ("parameters" in meta) is (path == "http-binary")  # binary only when asked


def test_bytes_round_trip(module_servers, path: str) -> None:  # noqa: ANN001
    texts = np.array([["a", "bé"], ["", "🙂 ok"]], dtype=object)
    result = Client(path, module_servers["text"]).infer(
        "text", {"input-0": (texts, "BYTES")}, ["predict"]
    )
    out = result.as_numpy("predict")
    assert out.shape == (2, 2)
    decoded = [x.decode() if isinstance(x, bytes) else x for x in out.ravel()]
    assert decoded == ["a", "bé", "", "🙂 ok"]


def test_iris_predictions_match_the_model(module_servers, path: str, iris) -> None:  # noqa: ANN001
    X, y, _ = iris
    rows = X[[0, 60, 120]].astype(np.float32)
    result = Client(path, module_servers["iris"]).infer(
        "iris", {"input-0": (rows, "FP32")}, ["predict", "predict_proba"]
    )
    np.testing.assert_array_equal(result.as_numpy("predict"), y[[0, 60, 120]])
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0)
    # no outputs named: "predict"
    default = Client(path, module_servers["iris"]).infer("iris", {"input-0": (rows, "FP32")})
    np.testing.assert_array_equal(default.as_numpy("predict"), y[[0, 60, 120]])


ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float64)
# (case, server, model, version, inputs, outputs, HTTP status, gRPC code, message part)
ERRORS = [
    ("unknown model", "iris", "nope", "", {"input-0": (ROW, "FP64")}, None,
     404, "NOT_FOUND", "model nope not found"),
    ("unknown version", "iris", "iris", "7", {"input-0": (ROW, "FP64")}, None,
     404, "NOT_FOUND", "model iris version 7 not found"),
    ("wrong datatype", "iris", "iris", "", {"input-0": (np.array([[b"x"] * 4], dtype=object), "BYTES")},
     None, 400, "INVALID_ARGUMENT", "datatype BYTES given, the model expects numbers"),
    ("wrong width", "iris", "iris", "", {"input-0": (ROW[:, :3], "FP64")}, None,
     400, "INVALID_ARGUMENT", "the model expects 4 features per row, got 3"),
    ("NaN", "iris", "iris", "", {"input-0": (np.array([[np.nan, 1, 2, 3]]), "FP64")}, None,
     400, "INVALID_ARGUMENT", "NaN or infinity"),
    ("unknown output", "iris", "iris", "", {"input-0": (ROW, "FP64")}, ["logits"],
     400, "INVALID_ARGUMENT", "unknown outputs ['logits']"),
    ("per-feature inputs to a tensor model", "iris", "iris", "",
     {"a": (ROW[0, :2], "FP64"), "b": (ROW[0, 2:], "FP64")}, None,
     400, "INVALID_ARGUMENT", "the model takes a single tensor input"),
    ("not ready", "empty", "iris", "", {"input-0": (ROW, "FP64")}, None,
     503, "UNAVAILABLE", "model iris is not ready: no model configured"),
]  # fmt: skip


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_documented_errors(module_servers, path: str, case: tuple) -> None:  # noqa: ANN001
    _, server, model, version, inputs, outputs, status, code, message = case
    client = Client(path, module_servers[server])
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs, outputs, version=version)
    expected = f"StatusCode.{code}" if path == "grpc" else str(status)
    assert str(info.value.status()) == expected, info.value
    if path == "http-json" and case[0] == "NaN":
        message = "malformed JSON"  # tritonclient writes a bare NaN, which JSON does not have
    assert message in info.value.message()


def test_oversize_request(start_server, iris_loaded, path: str) -> None:  # noqa: ANN001
    server = start_server(iris_loaded, model_name="iris", max_request_bytes=4096)
    rows = np.random.default_rng(0).random((1000, 4))
    with pytest.raises(InferenceServerException) as info:
        Client(path, server).infer("iris", {"input-0": (rows, "FP64")})
    expected = "StatusCode.RESOURCE_EXHAUSTED" if path == "grpc" else "413"
    assert str(info.value.status()) == expected, info.value
    # and the server still answers
    ok = Client(path, server).infer("iris", {"input-0": (ROW, "FP64")})
    assert ok.as_numpy("predict").tolist() == [0]


def test_unknown_model_is_not_found_on_model_ready(module_servers, path: str) -> None:  # noqa: ANN001
    client = Client(path, module_servers["iris"]).client
    if path == "grpc":
        with pytest.raises(InferenceServerException) as info:
            client.is_model_ready("nope")
        assert str(info.value.status()) == "StatusCode.NOT_FOUND"
    else:  # tritonclient's HTTP client turns every non-200 into False
        assert client.is_model_ready("nope") is False
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert str(info.value.status()) in ("404", "StatusCode.NOT_FOUND")
