"""The gRPC adapter: ``inference.GRPCInferenceService`` and ``grpc.health.v1`` over the same
:class:`~mlops_runtime.dataplane.DataPlane` as REST (one model, one batcher, one set of metrics).

grpcio's asyncio server runs on the same event loop as uvicorn (see :mod:`mlops_runtime.server`).
Domain errors become gRPC status codes in one place (:func:`mlops_runtime.errors.grpc_status`):
INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, RESOURCE_EXHAUSTED (over the size limit, enforced by
grpc itself), INTERNAL. A message that does not parse as its protobuf type is INVALID_ARGUMENT
too (grpc would otherwise answer INTERNAL): requests are parsed by the handlers, not by grpc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mlops_runtime import grpc_codec
from mlops_runtime.dataplane import DataPlane
from mlops_runtime.errors import RuntimeServingError, grpc_status
from mlops_runtime.oip import SERVICE, methods
from mlops_runtime.oip import open_inference_pb2 as pb
from mlops_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class _Malformed:
    """Stands for a request that is not a valid protobuf message of its type."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _parser(message_type: type) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError) as exc:
            return _Malformed(f"malformed {message_type.DESCRIPTOR.name}: {exc}")

    return parse


async def _abort(context: grpc.aio.ServicerContext, exc: RuntimeServingError) -> None:
    code, details = grpc_status(exc)
    await context.abort(grpc.StatusCode[code], details)


class InferenceServicer:
    """The six RPCs of the Open Inference Protocol, each a thin adapter over the data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=self.plane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:  # noqa: N802
        try:
            ready = self.plane.model_ready(request.name, request.version or None)
        except RuntimeServingError as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> Any:  # noqa: N802
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> Any:  # noqa: N802
        try:
            meta = self.plane.model_metadata(request.name, request.version or None)
        except RuntimeServingError as exc:
            await _abort(context, exc)
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=grpc_codec.tensor_metadata(meta["inputs"]),
            outputs=grpc_codec.tensor_metadata(meta["outputs"]),
        )  # fmt: skip

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:  # noqa: N802
        plane = self.plane
        started = time.perf_counter()
        code = 500
        failure: RuntimeServingError | None = None
        plane.batcher.enter()
        try:
            model = plane.served(request.model_name, request.model_version or None)
            decoded = grpc_codec.decode_request(request, model.spec, plane.known_outputs)
            results = await plane.predict(decoded)
            response = grpc_codec.encode_response(model.name, model.version, decoded, results)
            code = 200
        except RuntimeServingError as exc:
            code, failure = exc.status_code, exc
        except Exception:  # a bug, not the client's mistake: still a status, never a hang
            log.exception("gRPC inference failed")
        finally:
            # counted before the status goes out (``abort`` sends it at once): a client that
            # has its answer finds it in /metrics
            plane.batcher.leave()
            plane.metrics.observe_request("grpc_infer", code, time.perf_counter() - started)
        if failure is not None:
            await _abort(context, failure)
        if code != 200:
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler of the service: method names and types from the generated
        descriptor; requests parsed leniently so that garbage is INVALID_ARGUMENT."""
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                _guard(getattr(self, name)),
                request_deserializer=_parser(request_type),
                response_serializer=response_type.SerializeToString,
            )
            for name, (request_type, response_type) in methods().items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _guard(handler: Handler) -> Handler:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await handler(request, context)

    guarded.__name__ = handler.__name__
    return guarded


class GrpcServer:
    """The gRPC server of one model server process (start and stop on the running loop)."""

    def __init__(self, plane: DataPlane, settings: RuntimeSettings) -> None:
        self.plane = plane
        self.settings = settings
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> int:
        """Bind ``settings.host:settings.grpc_port`` and serve; returns the bound port."""
        options = [
            ("grpc.max_receive_message_length", self.settings.max_request_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a silently shared port
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((InferenceServicer(self.plane).handler(),))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        self.port = server.add_insecure_port(address)
        if not self.port:
            raise RuntimeError(f"cannot bind gRPC to {address}")
        await server.start()
        self._server = server
        loop = asyncio.get_running_loop()
        self.plane.on_ready_change(lambda ready: loop.create_task(self._set_health(ready)))
        log.info("gRPC (Open Inference Protocol, grpc.health.v1) on %s:%d",
                 self.settings.host, self.port)  # fmt: skip
        return self.port

    async def _set_health(self, ready: bool) -> None:
        assert self._health is not None
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)  # fmt: skip
        for service in ("", SERVICE):
            await self._health.set(service, status)

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish for ``grace`` seconds,
        stop. Safe to call more than once and concurrently (later calls wait for the first)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None
