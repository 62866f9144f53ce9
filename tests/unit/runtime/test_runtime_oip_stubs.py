"""The committed gRPC message modules are exactly what the generator makes of the .proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_runtime.oip import SERVICE, generate, methods


def test_regenerating_the_stubs_gives_the_committed_files(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the stubs")
    written = generate.generate(tmp_path)
    assert [p.name for p in written] == list(generate.GENERATED)
    for path in written:
        committed = generate.PACKAGE_DIR / path.name
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed.name} is stale: run .venv/bin/python -m mlops_runtime.oip.generate"
        )


def test_the_service_has_the_protocols_six_rpcs() -> None:
    assert SERVICE == "inference.GRPCInferenceService"
    assert {name: (req.__name__, resp.__name__) for name, (req, resp) in methods().items()} == {
        rpc: (f"{rpc}Request", f"{rpc}Response")
        for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                    "ModelMetadata", "ModelInfer")
    }  # fmt: skip


def test_messages_are_wire_compatible_with_tritonclient() -> None:
    """Same field numbers and types: a request serialised by one parses in the other."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from mlops_runtime.oip import open_inference_pb2 as pb

    theirs = service_pb2.ModelInferRequest(model_name="m", model_version="2", id="x")
    t = theirs.inputs.add(name="in", datatype="FP32", shape=[1, 2])
    t.contents.fp32_contents.extend([1.5, 2.5])
    t.parameters["p"].int64_param = 7
    theirs.outputs.add(name="predict").parameters["binary_data"].bool_param = True
    theirs.raw_input_contents.append(b"\x01\x02")
    ours = pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert list(ours.inputs[0].contents.fp32_contents) == [1.5, 2.5]
    assert ours.inputs[0].parameters["p"].int64_param == 7
    response = pb.ModelInferResponse(model_name="m", raw_output_contents=[b"abc"])
    response.outputs.add(name="predict", datatype="INT64", shape=[3])
    back = service_pb2.ModelInferResponse.FromString(response.SerializeToString())
    assert back.outputs[0].shape == [3] and back.raw_output_contents == [b"abc"]
