"""The binary tensor data extension on the REST infer routes: codec round trips for every
datatype, the exact 400s for bodies that do not hold what they claim, and the HTTP headers."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlops_runtime import codec
from mlops_runtime.codec import DATATYPES, FeatureSpec
from mlops_runtime.dataplane import DataPlane
from mlops_runtime.errors import InvalidRequest
from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings

NUMERIC = sorted(codec.NUMERIC)
ECHO = FeatureSpec(None, None, True)
TEXT = FeatureSpec(None, None, False)
OUTS = frozenset({"predict"})


def binary_body(arrays: list[tuple[str, np.ndarray]], **extra: object) -> tuple[bytes, int]:
    """A request whose inputs all travel as binary tensor data; returns (body, JSON length)."""
    inputs, blobs = [], []
    for datatype, array in arrays:
        raw = codec.array_to_bytes(array)
        inputs.append({"name": "input-0", "datatype": datatype, "shape": list(array.shape),
                       "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        blobs.append(raw)
    head = json.dumps({"inputs": inputs, **extra}).encode()
    return head + b"".join(blobs), len(head)


def split_response(body: bytes, header_length: int) -> tuple[dict, list[np.ndarray]]:
    """Parse a response with binary outputs back into its JSON and arrays."""
    head = orjson.loads(body[:header_length])
    offset, arrays = header_length, []
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        raw = body[offset : offset + size]
        offset += size
        arrays.append(codec.array_from_bytes("out", out["datatype"], raw).reshape(out["shape"]))
    assert offset == len(body)
    return head, arrays


def arrays_of(datatype: str) -> st.SearchStrategy[np.ndarray]:
    dtype = DATATYPES[datatype]
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
                      elements=elements)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(NUMERIC))
def test_every_numeric_datatype_round_trips_through_the_codec(data, datatype: str) -> None:  # noqa: ANN001
    array = data.draw(arrays_of(datatype))
    body, length = binary_body([(datatype, array)], parameters={"binary_data_output": True})
    request = codec.decode_infer(body, ECHO, OUTS, length)
    assert request.rows.dtype == array.dtype
    np.testing.assert_array_equal(request.rows, array)
    assert request.binary == (True,)
    out, out_length = codec.encode_infer("echo", "1", request, [request.rows])
    head, [back] = split_response(out, out_length)
    assert head["outputs"][0]["datatype"] == datatype
    np.testing.assert_array_equal(back, array)
    # the same tensor as JSON decodes to the same rows
    as_json = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": list(array.shape),
                                      "data": array.ravel().tolist()}]}).encode()  # fmt: skip
    np.testing.assert_array_equal(codec.decode_infer(as_json, ECHO, OUTS).rows, array)


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(st.text(max_size=8), min_size=1, max_size=6))
def test_bytes_round_trip_through_the_codec(texts: list[str]) -> None:
    array = np.empty((len(texts), 1), dtype=object)
    array[:, 0] = [t.encode() for t in texts]
    body, length = binary_body([("BYTES", array)], parameters={"binary_data_output": True})
    request = codec.decode_infer(body, TEXT, OUTS, length)
    assert request.rows[:, 0].tolist() == texts  # BYTES reach the model as str
    out, out_length = codec.encode_infer("text", "1", request, [request.rows])
    _, [back] = split_response(out, out_length)
    assert [b.decode() for b in back.ravel()] == texts


ROW = np.array([[5.1, 3.5, 1.4, 0.2]])


def with_tail(head: bytes, tail: bytes) -> tuple[bytes, int]:
    """A JSON head and the bytes after it, with the head's length."""
    return head + tail, len(head)


PARTIAL = with_tail(b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],'
                    b'"parameters":{"binary_data_size":6}}]}', b"\0" * 6)  # fmt: skip
NEGATIVE = with_tail(b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1,4],'
                     b'"parameters":{"binary_data_size":-1}}]}', b"")  # fmt: skip
BOTH = with_tail(b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1,4],"data":[1,2,3,4],'
                 b'"parameters":{"binary_data_size":32}}]}', b"\0" * 32)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b'{"inputs": []}', 500,
         "Inference-Header-Content-Length is 500 but the body has only 14 bytes"),
        (binary_body([("FP64", ROW)])[0][:-8], binary_body([("FP64", ROW)])[1],
         "inputs[0]: binary_data_size is 32 but only 24 bytes of binary data remain"),
        (binary_body([("FP64", ROW)])[0] + b"\0" * 3, binary_body([("FP64", ROW)])[1],
         "the body has 3 bytes of binary data that no input's binary_data_size claims"),
        (*PARTIAL,
         "inputs[0]: 6 bytes of binary data is not a whole number of FP32 elements (4 bytes each)"),
        (*NEGATIVE, "inputs[0]: binary_data_size must be a non-negative integer"),
        (*BOTH, "inputs[0]: give either 'data' or binary_data_size, not both"),
    ],
    ids=["header-longer-than-body", "truncated", "trailing-bytes", "partial-element",
         "negative-size", "data-and-binary"],
)  # fmt: skip
def test_bodies_that_do_not_hold_what_they_claim(body: bytes, length: int, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        codec.decode_infer(body, ECHO, OUTS, length)
    assert info.value.message == message


def test_binary_size_without_the_header() -> None:
    body = b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1,1],' \
           b'"parameters":{"binary_data_size":8}}]}'  # fmt: skip
    with pytest.raises(InvalidRequest, match="no Inference-Header-Content-Length header"):
        codec.decode_infer(body, ECHO, OUTS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\x05\0\0", "BYTES data ends inside an element's 4-byte length"),
     (struct.pack("<I", 9) + b"abc", "a BYTES element claims 9 bytes but only 3 remain")],
)  # fmt: skip
def test_malformed_bytes_elements(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        codec.array_from_bytes("inputs[0]", "BYTES", raw)


def test_non_utf8_bytes_for_a_text_model() -> None:
    array = np.array([[b"\xff\xfe"]], dtype=object)
    body, length = binary_body([("BYTES", array)])
    with pytest.raises(InvalidRequest, match="BYTES element 0 is not valid UTF-8"):
        codec.decode_infer(body, TEXT, OUTS, length)


# -- over HTTP, on the fast path and on the FastAPI routes --------------------------------------


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
def http(request: pytest.FixtureRequest, iris_loaded) -> TestClient:  # noqa: ANN001
    settings = RuntimeSettings(model_name="iris", infer_fast_path=request.param,
                               max_request_bytes=64 * 1024)  # fmt: skip
    plane = DataPlane(settings)
    plane.install(iris_loaded)
    with TestClient(create_app(settings, plane)) as client:
        yield client


def test_binary_request_and_response_over_http(http: TestClient, iris) -> None:  # noqa: ANN001
    X, y, _ = iris
    rows = X[[0, 60, 120]].astype(np.float32)
    body, length = binary_body([("FP32", rows)], id="b-1",
                               outputs=[{"name": "predict", "parameters": {"binary_data": True}},
                                        {"name": "predict_proba"}])  # fmt: skip
    r = http.post("/v2/models/iris/infer", content=body,
                  headers={"Inference-Header-Content-Length": str(length)})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    json_length = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:json_length])
    predict, proba = head["outputs"]
    assert head["id"] == "b-1"
    assert predict["parameters"] == {"binary_data_size": 24} and "data" not in predict
    assert proba["shape"] == [3, 3] and len(proba["data"]) == 9  # JSON: binary not asked for
    labels = np.frombuffer(r.content[json_length:], dtype="<i8")
    assert labels.tolist() == y[[0, 60, 120]].tolist()


def test_json_stays_json(http: TestClient) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": ROW[0].tolist()}]}
    r = http.post("/v2/models/iris/infer", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    assert r.json()["outputs"][0]["data"] == [0]
    # binary_data_output asks for every output in binary, with JSON inputs too
    r = http.post(
        "/v2/models/iris/infer", json={**body, "parameters": {"binary_data_output": True}}
    )
    length = int(r.headers["inference-header-content-length"])
    assert np.frombuffer(r.content[length:], dtype="<i8").tolist() == [0]


def test_server_metadata_advertises_the_extension(http: TestClient) -> None:
    assert http.get("/v2").json()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize(
    ("header", "message"),
    [("999", "Inference-Header-Content-Length is 999 but the body has only"),
     ("12abc", "Inference-Header-Content-Length must be a non-negative integer")],
)  # fmt: skip
def test_bad_header_is_400_with_the_reason(http: TestClient, header: str, message: str) -> None:
    body, _ = binary_body([("FP64", ROW)])
    r = http.post("/v2/models/iris/infer", content=body,
                  headers={"Inference-Header-Content-Length": header})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"].startswith(message)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0), length_delta=st.integers(-40, 40))
def test_truncated_or_mislabelled_binary_bodies_are_400(http: TestClient, cut: int,
                                                        length_delta: int) -> None:  # fmt: skip
    body, length = binary_body([("FP64", np.tile(ROW, (3, 1)))])
    body = body[: cut % len(body)]
    claimed = max(0, length + length_delta)
    r = http.post("/v2/models/iris/infer", content=body,
                  headers={"Inference-Header-Content-Length": str(claimed)})  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_oversize_binary_body_is_413(http: TestClient) -> None:
    body, length = binary_body([("FP64", np.zeros((3000, 4)))])
    r = http.post("/v2/models/iris/infer", content=body,
                  headers={"Inference-Header-Content-Length": str(length)})  # fmt: skip
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_echo_plane_serves_binary_bool(make_echo) -> None:  # noqa: ANN001
    settings = RuntimeSettings()
    plane = DataPlane(settings)
    plane.install(make_echo())
    array = np.array([[True, False, True]])
    body, length = binary_body([("BOOL", array)], parameters={"binary_data_output": True})
    with TestClient(create_app(settings, plane)) as client:
        r = client.post("/v2/models/echo/infer", content=body,
                        headers={"Inference-Header-Content-Length": str(length)})  # fmt: skip
    head, [back] = split_response(r.content, int(r.headers["inference-header-content-length"]))
    assert head["outputs"][0]["datatype"] == "BOOL"
    np.testing.assert_array_equal(back, array)
