"""Open Inference Protocol gRPC: messages generated from ``open_inference.proto`` by
:mod:`mlops_runtime.oip.generate` (never edited by hand), and the service's methods.

The .proto's package is ``mlops.oip.v2`` so that these messages can share a process with
tritonclient's, KServe's or MLServer's (all ``inference.*``); the service is served and called
under the protocol's name, :data:`SERVICE`, with methods and types read from the descriptor.
"""

from __future__ import annotations

from typing import Any

#: The protocol's service name: RPC paths are ``/inference.GRPCInferenceService/<Method>``.
SERVICE = "inference.GRPCInferenceService"


def methods() -> dict[str, tuple[Any, Any]]:
    """Every RPC of the service: name → (request message class, response message class)."""
    from mlops_runtime.oip import open_inference_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return {
        m.name: (getattr(pb, m.input_type.name), getattr(pb, m.output_type.name))
        for m in service.methods
    }


class Stub:
    """A client of the service on a ``grpc`` or ``grpc.aio`` channel: one callable per RPC
    (``stub.ModelInfer(request, timeout=...)``), like a generated stub."""

    def __init__(self, channel: Any) -> None:
        for name, (request, response) in methods().items():
            setattr(self, name, channel.unary_unary(
                f"/{SERVICE}/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            ))  # fmt: skip

    def __getattr__(self, name: str) -> Any:  # for type checkers: RPCs are set in __init__
        raise AttributeError(name)
