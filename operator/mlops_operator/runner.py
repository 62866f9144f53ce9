"""Run the operator: ``mlops-operator run`` (the same as ``kopf run -m mlops_operator.handlers``)."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    # `kill -USR1 <pid>` prints every thread's stack to stderr (a stuck pass shows where)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
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
