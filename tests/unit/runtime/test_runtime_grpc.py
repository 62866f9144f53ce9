"""gRPC specifics with the runtime's own messages: typed contents for every datatype, the error
codes of the protocol, malformed messages, grpc.health.v1, and one data plane behind both
transports. (The client conformance with tritonclient is in test_runtime_clients.py.)"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlops_runtime import codec
from mlops_runtime.grpc_codec import CONTENTS_FIELD
from mlops_runtime.oip import SERVICE, Stub
from mlops_runtime.oip import open_inference_pb2 as pb

TIMEOUT = 10  # seconds: a hung call fails the test with DEADLINE_EXCEEDED instead of hanging


@pytest.fixture(scope="module")
def channels(module_servers) -> Iterator[dict[str, grpc.Channel]]:  # noqa: ANN001
    opened = {name: grpc.insecure_channel(server.grpc) for name, server in module_servers.items()}
    yield opened
    for channel in opened.values():
        channel.close()


def call(channel: grpc.Channel, rpc: str, request: object) -> object:
    return getattr(Stub(channel), rpc)(request, timeout=TIMEOUT)


def code_of(channel: grpc.Channel, rpc: str, request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, rpc, request)
    return info.value.code(), info.value.details()


def infer_request(model: str, datatype: str, array: np.ndarray, raw: bool = False,
                  **kw: object) -> pb.ModelInferRequest:  # fmt: skip
    request = pb.ModelInferRequest(model_name=model, **kw)
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=array.shape)
    if raw:
        request.raw_input_contents.append(codec.array_to_bytes(array))
    else:
        values = array.ravel().tolist()
        if datatype == "BYTES":
            values = [v if isinstance(v, bytes) else v.encode() for v in values]
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return request


def result(response: pb.ModelInferResponse, index: int = 0) -> np.ndarray:
    out = response.outputs[index]
    return codec.array_from_bytes("out", out.datatype, response.raw_output_contents[index]).reshape(
        list(out.shape)
    )


@pytest.mark.parametrize("datatype", sorted(CONTENTS_FIELD.keys() - {"BYTES"}))
def test_typed_contents_round_trip(channels, datatype: str) -> None:  # noqa: ANN001
    dtype = codec.DATATYPES[datatype]
    array = (np.arange(6) % 2 == 1) if dtype.kind == "b" else np.arange(6) * 3
    array = array.astype(dtype).reshape(2, 3)
    response = call(channels["echo"], "ModelInfer", infer_request("echo", datatype, array, id="r"))
    assert response.id == "r" and response.model_name == "echo" and response.model_version == "1"
    assert response.outputs[0].datatype == datatype
    np.testing.assert_array_equal(result(response), array)


def test_bytes_contents_round_trip(channels) -> None:  # noqa: ANN001
    texts = np.array([["x", "é"]], dtype=object)
    response = call(channels["text"], "ModelInfer", infer_request("text", "BYTES", texts))
    assert [b.decode() for b in result(response).ravel()] == ["x", "é"]


def test_fp16_must_be_raw(channels) -> None:  # noqa: ANN001
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="x", datatype="FP16", shape=[1])
    assert code_of(channels["echo"], "ModelInfer", request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0]: FP16 data must be sent in raw_input_contents",
    )
    raw = infer_request("echo", "FP16", np.array([[1.5, -2.0]], dtype=np.float16), raw=True)
    assert result(call(channels["echo"], "ModelInfer", raw)).tolist() == [[1.5, -2.0]]


def _wrong_field() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp64_contents.extend(
        [1.0, 2.0, 3.0, 4.0])  # fmt: skip
    return request


def _raw_count() -> pb.ModelInferRequest:
    request = infer_request("iris", "FP64", np.zeros((1, 4)), raw=True)
    request.raw_input_contents.append(b"")
    return request


def _both() -> pb.ModelInferRequest:
    request = infer_request("iris", "FP64", np.zeros((1, 4)))
    request.raw_input_contents.append(codec.array_to_bytes(np.zeros((1, 4))))
    return request


def _overflow() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="x", datatype="INT8", shape=[1, 4]).contents.int_contents.extend(
        [1, 2, 3, 300])  # fmt: skip
    return request


CASES = [
    ("unknown model", "iris", infer_request("nope", "FP64", np.zeros((1, 4))),
     grpc.StatusCode.NOT_FOUND, "model nope not found"),
    ("unknown version", "iris", infer_request("iris", "FP64", np.zeros((1, 4)), model_version="9"),
     grpc.StatusCode.NOT_FOUND, "model iris version 9 not found"),
    ("not ready", "empty", infer_request("iris", "FP64", np.zeros((1, 4))),
     grpc.StatusCode.UNAVAILABLE, "model iris is not ready: no model configured"),
    ("no inputs", "iris", pb.ModelInferRequest(model_name="iris"),
     grpc.StatusCode.INVALID_ARGUMENT, "'inputs' must be a non-empty list"),
    ("unknown datatype", "iris", infer_request("iris", "FP64", np.zeros((1, 4)), raw=True),
     grpc.StatusCode.INVALID_ARGUMENT, "inputs[0]: unknown datatype 'FP128'"),
    ("shape/data mismatch", "iris", infer_request("iris", "FP64", np.zeros((1, 3)), raw=True),
     grpc.StatusCode.INVALID_ARGUMENT, "the model expects 4 features per row, got 3"),
    ("wrong contents field", "iris", _wrong_field(), grpc.StatusCode.INVALID_ARGUMENT,
     "inputs[0]: datatype FP32 carries its data in contents.fp32_contents, got contents.fp64_contents"),
    ("raw count", "iris", _raw_count(), grpc.StatusCode.INVALID_ARGUMENT,
     "raw_input_contents has 2 entries for 1 inputs (one per input)"),
    ("contents and raw", "iris", _both(), grpc.StatusCode.INVALID_ARGUMENT,
     "inputs[0]: give contents or raw_input_contents, not both"),
    ("overflow", "iris", _overflow(), grpc.StatusCode.INVALID_ARGUMENT,
     "inputs[0]: data does not match datatype INT8"),
    ("NaN", "iris", infer_request("iris", "FP64", np.array([[np.nan, 1, 2, 3]])),
     grpc.StatusCode.INVALID_ARGUMENT, "inputs[0]: data holds NaN or infinity"),
]  # fmt: skip
CASES[4][2].inputs[0].datatype = "FP128"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_errors_map_to_the_protocols_codes(channels, case: tuple) -> None:  # noqa: ANN001
    _, server, request, code, message = case
    got_code, details = code_of(channels[server], "ModelInfer", request)
    assert got_code == code
    assert details.startswith(message), details


def test_malformed_message_is_invalid_argument(channels) -> None:  # noqa: ANN001
    raw = channels["iris"].unary_unary(f"/{SERVICE}/ModelInfer")  # bytes in, bytes out
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x2a\x80"):
        with pytest.raises(grpc.RpcError) as info:
            raw(garbage, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("malformed ModelInferRequest")


def test_metadata_and_readiness(channels) -> None:  # noqa: ANN001
    iris, empty = channels["iris"], channels["empty"]
    assert call(iris, "ServerLive", pb.ServerLiveRequest()).live is True
    assert call(iris, "ServerReady", pb.ServerReadyRequest()).ready is True
    assert call(empty, "ServerReady", pb.ServerReadyRequest()).ready is False
    assert call(iris, "ModelReady", pb.ModelReadyRequest(name="iris")).ready is True
    assert call(empty, "ModelReady", pb.ModelReadyRequest(name="iris")).ready is False
    assert code_of(iris, "ModelReady", pb.ModelReadyRequest(name="nope"))[0] == (
        grpc.StatusCode.NOT_FOUND
    )
    meta = call(iris, "ServerMetadata", pb.ServerMetadataRequest())
    assert meta.name == "mlops-runtime" and list(meta.extensions) == ["binary_tensor_data"]
    model = call(iris, "ModelMetadata", pb.ModelMetadataRequest(name="iris"))
    assert model.platform == "mlflow-sklearn"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs][0] == (
        "predict",
        "INT64",
        [-1],
    )
    assert code_of(iris, "ModelMetadata", pb.ModelMetadataRequest(name="iris", version="3")) == (
        grpc.StatusCode.NOT_FOUND,
        "model iris version 3 not found",
    )


def test_grpc_health(channels) -> None:  # noqa: ANN001
    def check(name: str, service: str = "") -> int:
        stub = health_pb2_grpc.HealthStub(channels[name])
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status

    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)  # fmt: skip
    assert check("iris") == serving and check("iris", SERVICE) == serving
    assert check("empty") == not_serving
    with pytest.raises(grpc.RpcError) as info:
        check("iris", "some.Other")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_one_data_plane_behind_both_transports(module_servers, channels) -> None:  # noqa: ANN001
    """gRPC calls go through the REST app's data plane: its batcher, its metrics registry."""
    server = module_servers["iris"]

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{server.http}/metrics", timeout=TIMEOUT) as r:
            return r.read().decode()

    before, batches = scrape(), server.plane.batcher.batches
    call(channels["iris"], "ModelInfer", infer_request("iris", "FP64", np.zeros((3, 4))))
    code_of(channels["iris"], "ModelInfer", pb.ModelInferRequest(model_name="iris"))
    after = scrape()
    assert server.plane.batcher.batches == batches + 1
    assert _total(after, "grpc_infer", "200") == _total(before, "grpc_infer", "200") + 1
    assert _total(after, "grpc_infer", "400") == _total(before, "grpc_infer", "400") + 1


def _total(text: str, endpoint: str, code: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mlops_runtime_requests_total"
        and s.labels.get("endpoint") == endpoint
        and s.labels.get("code") == code
    )


def test_grpc_port_setting(start_server, make_echo, monkeypatch) -> None:  # noqa: ANN001
    from mlops_runtime.settings import RuntimeSettings

    monkeypatch.setenv("MLOPS_RUNTIME_GRPC_PORT", "9001")
    assert RuntimeSettings().grpc_port == 9001
    monkeypatch.delenv("MLOPS_RUNTIME_GRPC_PORT")
    assert RuntimeSettings().grpc_port == 8081
    with pytest.raises(ValueError, match="must differ from MLOPS_RUNTIME_PORT"):
        RuntimeSettings(port=8081)
    server = start_server(make_echo(), grpc_port=0)  # 0 = REST only
    assert server.server.grpc is None
    with urllib.request.urlopen(f"http://{server.http}/v2/health/ready", timeout=TIMEOUT) as r:
        assert r.status == 200


def test_shutdown_drains_an_in_flight_grpc_call(start_server, held_echo, refuses) -> None:  # noqa: ANN001
    import threading

    from mlops_localstack.cluster import poll

    model, release = held_echo
    server = start_server(model, inline_predict_max_rows=0, graceful_shutdown_s=10.0)
    outcome: dict[str, object] = {}

    def client() -> None:
        with grpc.insecure_channel(server.grpc) as channel:
            try:
                response = call(channel, "ModelInfer",
                                infer_request("echo", "FP64", np.ones((1, 2))))  # fmt: skip
                outcome["result"] = result(response).tolist()
            except grpc.RpcError as exc:
                outcome["error"] = exc.code()

    caller = threading.Thread(target=client)
    caller.start()
    poll("the call to be in flight", lambda: server.plane.batcher.in_flight == 1, timeout=10,
         interval=0.01)  # fmt: skip
    server.server.exit()  # like SIGTERM
    port = int(server.grpc.rsplit(":", 1)[1])

    # the listener is closed once grpc's graceful stop has begun
    poll("the gRPC listener to close", lambda: refuses(port), timeout=10, interval=0.01)
    with grpc.insecure_channel(server.grpc) as late:  # new calls are refused while draining
        assert code_of(late, "ServerLive", pb.ServerLiveRequest())[0] == (
            grpc.StatusCode.UNAVAILABLE
        )
    assert caller.is_alive()
    release.set()
    caller.join(10)
    assert outcome == {"result": [[1.0, 1.0]]}
    server.thread.join(15)
    assert not server.thread.is_alive()


async def test_a_taken_grpc_port_fails_the_start() -> None:
    """so_reuseport is off: a second server cannot silently share the port with the first."""
    import socket

    from mlops_runtime.dataplane import DataPlane
    from mlops_runtime.grpc_server import GrpcServer
    from mlops_runtime.settings import RuntimeSettings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = RuntimeSettings(host="127.0.0.1", grpc_port=port)
    first = GrpcServer(DataPlane(settings), settings)
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="Failed to bind"):
            await GrpcServer(DataPlane(settings), settings).start()
    finally:
        await first.stop(0)
