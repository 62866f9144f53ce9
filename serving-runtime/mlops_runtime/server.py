"""Running the model server under uvicorn (uvloop + httptools when available)."""

from __future__ import annotations

import importlib.util
import logging

import uvicorn

from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings


def uvicorn_speedups() -> dict[str, str]:
    """Pick uvloop and httptools when installed (they are, with ``uvicorn[standard]``)."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def serve(settings: RuntimeSettings) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests are drained before exit."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        **uvicorn_speedups(),
    )
    uvicorn.Server(config).run()
