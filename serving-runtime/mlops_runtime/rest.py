"""The REST adapter: a FastAPI app factory over the :class:`~mlops_runtime.dataplane.DataPlane`.

:func:`create_app` takes a settings object and assembles small route groups, each a thin adapter
over the data plane. Domain errors become HTTP responses in exactly one place
(:func:`mlops_runtime.errors.error_body`, installed by :func:`_add_error_handlers`). The inference
routes read the raw body with :func:`mlops_runtime.body.read_body` and let the data plane parse
it with orjson; their request schemas are still published in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops_runtime import __version__, protocol
from mlops_runtime.body import read_body
from mlops_runtime.codec import header_length
from mlops_runtime.dataplane import DataPlane
from mlops_runtime.errors import RuntimeServingError, error_body
from mlops_runtime.fastpath import InferFastPath, response_headers
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
_META_ERRORS = {404: _ERRORS[404], 503: _ERRORS[503]}


def _request_body(model: type) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(settings: RuntimeSettings | None = None, plane: DataPlane | None = None) -> FastAPI:
    """Build the model server app. Loads the model in the background on startup unless ``plane``
    already holds one."""
    settings = settings or RuntimeSettings()
    plane = plane or DataPlane(settings)
    app = FastAPI(
        title="mlops-runtime",
        version=__version__,
        description="Open Inference Protocol (V2) server for MLflow models",
        lifespan=_lifespan(plane),
    )
    app.state.plane = plane
    app.state.settings = settings
    #: awaited on shutdown before the plane closes (the gRPC server's drain, see server.py)
    app.state.shutdown_hooks = []
    _add_error_handlers(app)
    app.include_router(_health_routes(plane))
    app.include_router(_metadata_routes(plane))
    app.include_router(_inference_routes(plane, settings.max_request_bytes))
    app.include_router(_metrics_routes(plane))
    if settings.infer_fast_path:
        _infer_first(app, plane, settings.max_request_bytes)
    _publish_schemas(app, [protocol.InferenceRequest, protocol.PredictRequest])
    return app


def _infer_first(app: FastAPI, plane: DataPlane, limit: int) -> None:
    """Put :class:`InferFastPath` in front of FastAPI's own middleware, not behind it (where
    ``add_middleware`` would): ServerErrorMiddleware, FastAPI's exception telemetry and body limit
    wrap every request and its ``send``, which cost an infer request more than its codec
    (py-spy, 64 connections). The fast path limits the body and answers its own errors; every
    other request goes through the full stack as before."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> Any:
        return InferFastPath(build(), plane=plane, limit=limit)

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]


def _lifespan(plane: DataPlane) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager]:
    """Load the model in the background (unless loaded); on shutdown run the app's shutdown
    hooks, then close the plane."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None if plane.ready() else asyncio.create_task(plane.load(), name="model-load")
        try:
            yield
        finally:
            for hook in app.state.shutdown_hooks:
                await hook()
            if loader is not None and not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            await plane.close()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": ...}``; domain errors through :func:`error_body`."""

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


def _health_routes(plane: DataPlane) -> APIRouter:
    """Server liveness and readiness."""
    routes = APIRouter(tags=["health"])

    @routes.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        """Liveness: the process serves HTTP."""
        return {"live": plane.live()}

    @routes.get("/v2/health/ready", responses={503: _ERRORS[503]})
    async def ready() -> Response:
        """Readiness: 200 once the model is loaded, 503 (with the reason) before or on failure."""
        if plane.ready():
            return Response(b'{"ready":true}', media_type=JSON)
        return _error(503, f"not ready: {plane.load_error or 'loading'}", ready=False)

    return routes


def _metadata_routes(plane: DataPlane) -> APIRouter:
    """Server and model metadata, and per-model readiness."""
    routes = APIRouter()

    @routes.get("/v2", tags=["metadata"], response_model=protocol.MetadataServerResponse)
    async def server_metadata() -> dict[str, Any]:
        """Server name, version and protocol extensions."""
        return plane.server_metadata()

    @routes.get("/v2/models/{model_name}", tags=["metadata"], responses=_META_ERRORS,
                response_model=protocol.MetadataModelResponse)  # fmt: skip
    async def model_metadata(model_name: str) -> dict[str, Any]:
        """Model metadata from the MLflow signature; while not loaded, the reason in parameters."""
        return plane.model_metadata(model_name)

    @routes.get("/v2/models/{model_name}/versions/{model_version}", tags=["metadata"],
                responses=_META_ERRORS, response_model=protocol.MetadataModelResponse)  # fmt: skip
    async def model_version_metadata(model_name: str, model_version: str) -> dict[str, Any]:
        """Metadata of one version (404 unless it is the version being served)."""
        return plane.model_metadata(model_name, model_version)

    async def _model_ready(model_name: str, model_version: str | None) -> Response:
        if plane.model_ready(model_name, model_version):
            return JSONResponse({"name": model_name, "ready": True})
        return _error(503, f"model {model_name} not ready: {plane.load_error or 'loading'}",
                      name=model_name, ready=False)  # fmt: skip

    @routes.get("/v2/models/{model_name}/ready", tags=["health"], responses=_META_ERRORS)
    async def model_ready(model_name: str) -> Response:
        """200 when this model is ready, 503 when not, 404 when unknown."""
        return await _model_ready(model_name, None)

    @routes.get("/v2/models/{model_name}/versions/{model_version}/ready", tags=["health"],
                responses=_META_ERRORS)  # fmt: skip
    async def model_version_ready(model_name: str, model_version: str) -> Response:
        """200 when this version is ready, 503 when not, 404 when unknown."""
        return await _model_ready(model_name, model_version)

    return routes


def _inference_routes(plane: DataPlane, limit: int) -> APIRouter:
    """Open Inference Protocol inference and the simple ``/predict``."""
    routes = APIRouter(tags=["inference"])

    async def _serve(
        endpoint: str, request: Request, run: Callable[[bytes], Awaitable[bytes]]
    ) -> Response:
        """Read the body, run it through the data plane, count and time the request."""
        started = time.perf_counter()
        code = 500
        plane.batcher.enter()
        try:
            payload = await run(await read_body(request.scope["headers"], request.receive, limit))
            code = 200
            return Response(payload, media_type=JSON)
        except RuntimeServingError as exc:
            code = exc.status_code
            raise
        finally:
            plane.batcher.leave()
            plane.metrics.observe_request(endpoint, code, time.perf_counter() - started)

    async def _infer(request: Request, model_name: str, model_version: str | None) -> Response:
        """Like :func:`_serve`, with the binary tensor data extension on both sides."""
        started = time.perf_counter()
        code = 500
        plane.batcher.enter()
        try:
            headers = request.scope["headers"]
            body = await read_body(headers, request.receive, limit)
            payload, json_length = await plane.infer(
                model_name, model_version, body, header_length(headers)
            )
            code = 200
            return Response(payload, headers=dict(
                (k.decode(), v.decode()) for k, v in response_headers(len(payload), json_length)
            ))  # fmt: skip
        except RuntimeServingError as exc:
            code = exc.status_code
            raise
        finally:
            plane.batcher.leave()
            plane.metrics.observe_request("infer", code, time.perf_counter() - started)

    infer_doc: dict[str, Any] = {
        "responses": _ERRORS,
        "response_model": protocol.InferenceResponse,
        "openapi_extra": _request_body(protocol.InferenceRequest),
    }

    @routes.post("/v2/models/{model_name}/infer", **infer_doc)
    async def infer(request: Request, model_name: str) -> Response:
        """Open Inference Protocol inference on the served model."""
        return await _infer(request, model_name, None)

    @routes.post("/v2/models/{model_name}/versions/{model_version}/infer", **infer_doc)
    async def infer_version(request: Request, model_name: str, model_version: str) -> Response:
        """Inference on a specific version (404 unless it is the one being served)."""
        return await _infer(request, model_name, model_version)

    @routes.post("/predict", responses=_ERRORS, response_model=protocol.PredictResponse,
                 openapi_extra=_request_body(protocol.PredictRequest))  # fmt: skip
    async def predict(request: Request) -> Response:
        """Simple JSON prediction: ``{"instances": [[...], ...]}`` → ``{"predictions": [...]}``."""
        return await _serve("predict", request, plane.predict_instances)

    return routes


def _metrics_routes(plane: DataPlane) -> APIRouter:
    """The Prometheus exposition."""
    routes = APIRouter(tags=["metrics"])

    @routes.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus exposition of the runtime metrics."""
        return Response(generate_latest(plane.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return routes


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
