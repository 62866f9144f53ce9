"""The REST adapter: a FastAPI app factory over the :class:`~mlops_runtime.dataplane.DataPlane`.

Domain errors become HTTP responses in exactly one place (:func:`_domain_error`). The inference
routes read the raw body and let the data plane parse it with orjson; their request schemas are
still published in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops_runtime import __version__, protocol
from mlops_runtime.dataplane import DataPlane
from mlops_runtime.errors import InvalidRequest, PayloadTooLarge, RuntimeServingError
from mlops_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": protocol.ErrorResponse, "description": text}
    for code, text in [
        (400, "Malformed request: bad JSON, shape or datatype"),
        (404, "Unknown model or version"),
        (413, "Payload over the size limit"),
        (503, "Model not ready"),
    ]
}


def _request_body(model: type) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def error_body(exc: RuntimeServingError) -> tuple[int, bytes]:
    """The one mapping of domain errors to HTTP: status code and ``{"error": ...}`` body."""
    return exc.status_code, orjson.dumps({"error": exc.message})


class InferFastPath:
    """ASGI middleware serving ``POST .../infer`` without FastAPI's routing and body handling.

    The FastAPI routes below stay as the documented (OpenAPI) and fallback implementation; this
    layer answers the same requests with the same data plane calls, status codes and bodies,
    only with less per-request overhead.
    """

    def __init__(self, app: Any, plane: DataPlane, limit: int) -> None:
        self.app = app
        self.plane = plane
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")
        n = len(parts)
        if (
            parts[-1] != "infer"
            or parts[1:3] != ["v2", "models"]
            or not (
                (n == 5 and parts[3])
                or (n == 7 and parts[4] == "versions" and parts[3] and parts[5])
            )
        ):
            await self.app(scope, receive, send)
            return
        plane = self.plane
        started = time.perf_counter()
        status = 500
        plane.batcher.enter()
        try:
            body = await self._body(scope, receive)
            payload = await plane.infer(parts[3], parts[5] if n == 7 else None, body)
            status = 200
        except RuntimeServingError as exc:
            status, payload = error_body(exc)
        except Exception:  # a bug, not the client's mistake: still an OIP error body
            log.exception("inference failed")
            status, payload = 500, b'{"error":"internal server error"}'
        finally:
            plane.batcher.leave()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
        plane.metrics.observe_request("infer", status, time.perf_counter() - started)

    async def _body(self, scope: dict, receive: Any) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    raise InvalidRequest("invalid Content-Length")
                if int(value) > self.limit:
                    raise PayloadTooLarge(self.limit)
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(self.limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) before reading it if possible."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidRequest("invalid Content-Length")
        if int(length) > limit:
            raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: RuntimeSettings | None = None, plane: DataPlane | None = None) -> FastAPI:
    """Build the model server app. Loads the model in the background on startup unless ``plane``
    already holds one."""
    settings = settings or RuntimeSettings()
    plane = plane or DataPlane(settings)
    limit = settings.max_request_bytes
    metrics = plane.metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = None if plane.ready() else asyncio.create_task(plane.load(), name="model-load")
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            await plane.close()

    app = FastAPI(
        title="mlops-runtime",
        version=__version__,
        description="Open Inference Protocol (V2) server for MLflow models",
        lifespan=lifespan,
    )
    app.state.plane = plane
    app.state.settings = settings

    @app.exception_handler(RuntimeServingError)
    async def _domain_error(_: Request, exc: RuntimeServingError) -> Response:
        status, body = error_body(exc)
        return Response(body, status_code=status, media_type=JSON)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %r", exc)
        return _error(500, "internal server error")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, f"invalid request: {exc.errors()}")

    # -- health ------------------------------------------------------------------------------

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict[str, bool]:
        """Liveness: the process serves HTTP."""
        return {"live": plane.live()}

    @app.get("/v2/health/ready", tags=["health"], responses={503: _ERRORS[503]})
    async def ready() -> Response:
        """Readiness: 200 once the model is loaded, 503 (with the reason) before or on failure."""
        if plane.ready():
            return Response(b'{"ready":true}', media_type=JSON)
        return _error(503, f"not ready: {plane.load_error or 'loading'}", ready=False)

    # -- metadata ----------------------------------------------------------------------------

    @app.get("/v2", tags=["metadata"], response_model=protocol.MetadataServerResponse)
    async def server_metadata() -> dict[str, Any]:
        """Server name, version and protocol extensions."""
        return plane.server_metadata()

    meta_responses = {404: _ERRORS[404], 503: _ERRORS[503]}

    @app.get("/v2/models/{model_name}", tags=["metadata"], responses=meta_responses,
             response_model=protocol.MetadataModelResponse)  # fmt: skip
    async def model_metadata(model_name: str) -> dict[str, Any]:
        """Model metadata from the MLflow signature; while not loaded, the reason in parameters."""
        return plane.model_metadata(model_name)

    @app.get("/v2/models/{model_name}/versions/{model_version}", tags=["metadata"],
             responses=meta_responses, response_model=protocol.MetadataModelResponse)  # fmt: skip
    async def model_version_metadata(model_name: str, model_version: str) -> dict[str, Any]:
        """Metadata of one version (404 unless it is the version being served)."""
        return plane.model_metadata(model_name, model_version)

    async def _model_ready(model_name: str, model_version: str | None) -> Response:
        if plane.model_ready(model_name, model_version):
            return JSONResponse({"name": model_name, "ready": True})
        return _error(503, f"model {model_name} not ready: {plane.load_error or 'loading'}",
                      name=model_name, ready=False)  # fmt: skip

    @app.get("/v2/models/{model_name}/ready", tags=["health"], responses=meta_responses)
    async def model_ready(model_name: str) -> Response:
        """200 when this model is ready, 503 when not, 404 when unknown."""
        return await _model_ready(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{model_version}/ready", tags=["health"],
             responses=meta_responses)  # fmt: skip
    async def model_version_ready(model_name: str, model_version: str) -> Response:
        """200 when this version is ready, 503 when not, 404 when unknown."""
        return await _model_ready(model_name, model_version)

    # -- inference ---------------------------------------------------------------------------

    async def _serve(
        endpoint: str, request: Request, run: Callable[[bytes], Awaitable[bytes]]
    ) -> Response:
        """Read the body, run it through the data plane, count and time the request."""
        started = time.perf_counter()
        code = 500
        plane.batcher.enter()
        try:
            payload = await run(await read_body(request, limit))
            code = 200
            return Response(payload, media_type=JSON)
        except RuntimeServingError as exc:
            code = exc.status_code
            raise
        finally:
            plane.batcher.leave()
            metrics.observe_request(endpoint, code, time.perf_counter() - started)

    async def _infer(request: Request, model_name: str, model_version: str | None) -> Response:
        return await _serve(
            "infer", request, lambda body: plane.infer(model_name, model_version, body)
        )

    infer_doc: dict[str, Any] = {
        "tags": ["inference"],
        "responses": _ERRORS,
        "response_model": protocol.InferenceResponse,
        "openapi_extra": _request_body(protocol.InferenceRequest),
    }

    @app.post("/v2/models/{model_name}/infer", **infer_doc)
    async def infer(request: Request, model_name: str) -> Response:
        """Open Inference Protocol inference on the served model."""
        return await _infer(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{model_version}/infer", **infer_doc)
    async def infer_version(request: Request, model_name: str, model_version: str) -> Response:
        """Inference on a specific version (404 unless it is the one being served)."""
        return await _infer(request, model_name, model_version)

    @app.post("/predict", tags=["inference"], responses=_ERRORS,
              response_model=protocol.PredictResponse,
              openapi_extra=_request_body(protocol.PredictRequest))  # fmt: skip
    async def predict(request: Request) -> Response:
        """Simple JSON prediction: ``{"instances": [[...], ...]}`` → ``{"predictions": [...]}``."""
        return await _serve("predict", request, plane.predict_instances)

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus exposition of the runtime metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.infer_fast_path:
        app.add_middleware(InferFastPath, plane=plane, limit=limit)
    _publish_schemas(app, [protocol.InferenceRequest, protocol.PredictRequest])
    return app


def _publish_schemas(app: FastAPI, models: list[type]) -> None:
    """Add request schemas (referenced by ``openapi_extra``) to the OpenAPI components."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        _, defs = models_json_schema(
            [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
