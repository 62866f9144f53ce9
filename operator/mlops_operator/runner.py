"""Run the operator: ``mlops-operator run`` (the same as ``kopf run -m mlops_operator.handlers``)."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal

import kopf

from .settings import get_settings


def run(
    namespaces: list[str] | None = None,
    verbose: bool = False,
    liveness: str | None = None,
    all_namespaces: bool = False,
) -> None:
    """Import the handlers and run kopf until interrupted.

    Scope: ``all_namespaces`` → cluster-wide; else ``namespaces`` (globs such as ``team-*``
    allowed); else ``MLOPS_NAMESPACES``; else cluster-wide.
    """
    # kopf's own root handler, with our format (a second handler would print every line twice)
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # `kill -USR1 <pid>` prints every thread's stack to stderr (a stuck pass shows where)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # MLflow 3's client reports usage to mlflow-telemetry.io from a thread it starts at import
    # and records every client call for it: an operator does not phone home unless asked to.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = get_settings()
    ns = [] if all_namespaces else (namespaces or cfg.namespaces)
    from . import handlers  # noqa: F401 - registers handlers

    asyncio.run(
        kopf.operator(
            clusterwide=not ns,
            namespaces=ns or (),
            standalone=cfg.peering is None,
            peering_name=cfg.peering,
            liveness_endpoint=liveness,
        )
    )
