"""Running the model server under uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import uvicorn

from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings


def uvicorn_speedups() -> dict[str, str]:
    """Pick uvloop and httptools when installed (they are, with ``uvicorn[standard]``)."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def run_asgi(
    app: Any, host: str, port: int, log_level: str, graceful_shutdown_s: float, **extra: Any
) -> None:
    """Serve ``app`` under uvicorn until SIGTERM/SIGINT, draining in-flight requests."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_s,
        **uvicorn_speedups(),
        **extra,
    )
    uvicorn.Server(config).run()


def serve(settings: RuntimeSettings) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests are drained before exit."""
    run_asgi(create_app(settings), settings.host, settings.port, settings.log_level,
             settings.graceful_shutdown_s)
