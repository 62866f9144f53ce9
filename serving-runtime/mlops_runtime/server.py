"""Running the model server: REST under uvicorn (uvloop + httptools when available) and gRPC
(grpcio aio) on the same event loop, over one data plane."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

import uvicorn

from mlops_runtime.dataplane import DataPlane
from mlops_runtime.fastpath import InferFastPath
from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings


def uvicorn_speedups() -> dict[str, str]:
    """Pick uvloop and httptools when installed (they are, with ``uvicorn[standard]``)."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def _logging(log_level: str) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _config(app: Any, host: str, port: int, log_level: str, graceful_shutdown_s: float,
            keep_alive_s: float, **extra: Any) -> uvicorn.Config:  # fmt: skip
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_s,
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type] - call_later takes a float
        **{**uvicorn_speedups(), **extra},
    )


def _infer_protocol(plane: DataPlane, limit: int) -> Any:
    """uvicorn's httptools protocol answering infer requests itself
    (:mod:`mlops_runtime.infer_protocol`), or ``None`` without httptools or with a uvicorn
    whose protocol is not where that module expects it (the ASGI fast path still answers)."""
    if uvicorn_speedups()["http"] != "httptools":
        return None
    try:
        from mlops_runtime.infer_protocol import protocol_for
    except ImportError as exc:
        logging.getLogger(__name__).warning("infer requests go through ASGI: %s", exc)
        return None
    return protocol_for(plane, limit)


def run_asgi(
    app: Any, host: str, port: int, log_level: str, graceful_shutdown_s: float,
    keep_alive_s: float, **extra: Any,
) -> None:  # fmt: skip
    """Serve ``app`` under uvicorn until SIGTERM/SIGINT, draining in-flight requests."""
    _logging(log_level)
    uvicorn.Server(_config(app, host, port, log_level, graceful_shutdown_s, keep_alive_s,
                           **extra)).run()  # fmt: skip


class ModelServer:
    """One model server process: the REST app and, unless ``grpc_port`` is 0, the gRPC server,
    both over the same :class:`DataPlane` and on the same event loop."""

    def __init__(self, settings: RuntimeSettings, plane: DataPlane | None = None) -> None:
        self.settings = settings
        self.plane = plane or DataPlane(settings)
        self.app = create_app(settings, self.plane)
        # infer requests skip FastAPI.__call__ too (the app's own stack has the fast path for
        # other ASGI servers and test clients); no X-Forwarded-* rewriting: nothing here reads
        # the client's address (no access log)
        asgi: Any = self.app
        extra: dict[str, Any] = {}
        if settings.infer_fast_path:
            asgi = InferFastPath(self.app, plane=self.plane, limit=settings.max_request_bytes)
            protocol = _infer_protocol(self.plane, settings.max_request_bytes)
            if protocol is not None:  # infer requests skip the ASGI cycle as well
                extra["http"] = protocol
        self.http = uvicorn.Server(_config(asgi, settings.host, settings.port,
                                           settings.log_level, settings.graceful_shutdown_s,
                                           settings.keep_alive_s, proxy_headers=False,
                                           **extra))  # fmt: skip
        self.grpc: Any = None

    @property
    def http_port(self) -> int | None:
        """The bound REST port (useful with ``port=0``), once started."""
        for server in getattr(self.http, "servers", []):
            for sock in server.sockets:
                return sock.getsockname()[1]
        return None

    async def serve(self) -> None:
        """Serve until :meth:`exit` or SIGTERM/SIGINT. Shutdown drains both transports at once:
        gRPC starts its graceful stop as soon as uvicorn is told to exit, and the app's lifespan
        shutdown (which uvicorn runs before it returns and re-raises the signal) waits for it."""
        if self.settings.grpc_port:
            from mlops_runtime.grpc_server import GrpcServer

            self.grpc = GrpcServer(self.plane, self.settings)
            await self.grpc.start()
            self.app.state.shutdown_hooks.append(self._stop_grpc)
            watcher = asyncio.create_task(self._stop_grpc_on_exit(), name="grpc-shutdown")
        try:
            await self.http.serve()
        finally:
            if self.grpc is not None:
                watcher.cancel()
                await self._stop_grpc()

    async def _stop_grpc(self) -> None:
        await self.grpc.stop(self.settings.graceful_shutdown_s)

    async def _stop_grpc_on_exit(self) -> None:
        while not self.http.should_exit:
            await asyncio.sleep(0.05)
        await self._stop_grpc()

    def exit(self) -> None:
        """Ask both servers to stop (thread-safe enough: uvicorn polls the flag)."""
        self.http.should_exit = True


def serve(settings: RuntimeSettings) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests are drained before exit."""
    _logging(settings.log_level)
    server = ModelServer(settings)
    if uvicorn_speedups()["loop"] == "uvloop":
        import uvloop

        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())
