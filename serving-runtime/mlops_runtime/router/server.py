"""Running the router under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from mlops_runtime.router.app import create_router
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.server import uvicorn_speedups


def serve_router(settings: RouterSettings) -> None:
    """Serve until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_router(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        **uvicorn_speedups(),
    )
    uvicorn.Server(config).run()
