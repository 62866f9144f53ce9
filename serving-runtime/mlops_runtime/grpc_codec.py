"""Open Inference Protocol gRPC messages ↔ the data plane's numpy arrays.

Requests are validated by the same functions as the REST codec (:mod:`mlops_runtime.codec`), so
both transports accept and refuse exactly the same tensors with the same messages. Typed
``contents`` and ``raw_input_contents`` are both accepted; responses always carry
``raw_output_contents`` (as Triton does: every client reads it, and it is the cheapest to build).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlops_runtime import codec
from mlops_runtime.codec import DATATYPES, DecodedRequest, FeatureSpec
from mlops_runtime.errors import InvalidRequest
from mlops_runtime.oip import open_inference_pb2 as pb

#: The typed-contents field that carries each datatype (FP16 has none: raw contents only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}  # fmt: skip


def _from_contents(where: str, datatype: str, tensor: Any) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(f"{where}: {datatype} data must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    if not values and tensor.HasField("contents"):
        others = [f.name for f, _ in tensor.contents.ListFields()]
        if others:
            raise InvalidRequest(
                f"{where}: datatype {datatype} carries its data in contents.{field}, "
                f"got contents.{others[0]}"
            )
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array
    try:
        return np.array(values, dtype=DATATYPES[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"{where}: data does not match datatype {datatype}: {exc}") from None


def decode_request(
    request: pb.ModelInferRequest, spec: FeatureSpec, known_outputs: frozenset[str]
) -> DecodedRequest:
    """Validate a ``ModelInferRequest`` into rows for the model (raises :class:`InvalidRequest`)."""
    inputs = request.inputs
    if not inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs (one per input)"
        )
    tensors = []
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        datatype = codec.check_datatype(where, tensor.datatype, spec)
        shape = codec.check_shape(where, tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"{where}: give contents or raw_input_contents, not both")
            array = codec.array_from_bytes(where, datatype, raw[i])
        else:
            array = _from_contents(where, datatype, tensor)
        tensors.append((tensor.name, codec.finish_tensor(where, datatype, shape, array, spec)))
    rows = codec.rows_from_tensors(tensors, spec)
    outputs = codec.check_outputs(tuple(o.name for o in request.outputs), known_outputs)
    return DecodedRequest(rows, outputs, request.id or None, (True,) * len(outputs))


def encode_response(
    model_name: str, model_version: str | None, request: DecodedRequest, results: list[np.ndarray]
) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with one raw content entry per output."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version or "", id=request.request_id or ""
    )
    for name, array in zip(request.outputs, results, strict=True):
        response.outputs.add(name=name, datatype=codec.datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(codec.array_to_bytes(array))
    return response


def tensor_metadata(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    """Metadata dicts of the data plane as protobuf tensor metadata."""
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=t["name"], datatype=t["datatype"], shape=t["shape"]
        )
        for t in items
    ]
