"""Running the router under uvicorn."""

from __future__ import annotations

from mlops_runtime.router.app import create_router
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.server import run_asgi


def serve_router(settings: RouterSettings) -> None:
    """Serve until SIGTERM/SIGINT."""
    run_asgi(create_router(settings), settings.host, settings.port, settings.log_level,
             settings.graceful_shutdown_s, settings.keep_alive_s, lifespan="on")
