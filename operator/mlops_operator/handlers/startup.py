"""The one startup handler (kopf settings, our settings, /metrics, the controllers' workers and
the alias watch) and its cleanup."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import kopf

from .. import GROUP
from ..alerts import start_receiver, stop_receiver
from ..aliases import WATCH
from ..controller import CONTROLLERS
from ..metrics import serve_metrics
from ..mlflow_utils import make_client
from ..settings import get_settings

log = logging.getLogger(__name__)


_tasks: list[asyncio.Task[None]] = []
_receiver: list[Any] = []


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    """Authenticate with the kubernetes client's own config (in-cluster, else kubeconfig, its
    ``tokenFile`` included) — the one client the operator uses."""
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf once: own prefixes, watch timeouts, backoffs; start /metrics, the
    controllers' workers and the alias watch."""
    cfg = get_settings()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = cfg.watch_timeout_seconds
    settings.watching.client_timeout = cfg.watch_timeout_seconds + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = cfg.client_timeout_seconds
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60, 120]
    settings.posting.level = logging.INFO
    settings.peering.standalone = cfg.peering is None
    if cfg.peering:
        settings.peering.name = cfg.peering
        settings.peering.mandatory = True
        settings.peering.priority = (cfg.peering_priority if cfg.peering_priority is not None
                                     else random.randint(1, 2**30))
        settings.peering.lifetime = cfg.peering_lifetime_seconds
    memo.settings = cfg
    # Import MLflow here, once, before any handler thread does: sync handlers run in a thread
    # pool, and two threads importing mlflow for the first time at once can leave a partially
    # initialised module in sys.modules for the life of the process.
    import mlflow  # noqa: F401
    import mlflow.entities  # noqa: F401
    import mlflow.entities.model_registry  # noqa: F401
    import mlflow.exceptions  # noqa: F401
    import mlflow.tracking  # noqa: F401
    if cfg.metrics_port:
        try:
            serve_metrics(cfg.metrics_port, cfg.metrics_host)
        except OSError as exc:
            raise kopf.PermanentError(
                f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {exc}"
            ) from exc
    try:
        _receiver.append(await start_receiver(cfg))
    except OSError as exc:
        raise kopf.PermanentError(f"cannot serve the alert receiver: {exc}") from exc
    for ctl in CONTROLLERS.values():
        await ctl.start(cfg.workers)
    _tasks.append(asyncio.create_task(WATCH.run(
        lambda: make_client(cfg.mlflow_tracking_uri, cfg.mlflow_request_timeout),
        cfg.resync_seconds), name="alias-watch"))
    log.info("mlops-operator configured: mlflow=%s namespaces=%s", cfg.mlflow_tracking_uri,
             cfg.namespaces or "all")


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    """Stop the alert receiver, the workers and the alias watch."""
    while _receiver:
        await stop_receiver(_receiver.pop())
    for task in _tasks:
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)
    _tasks.clear()
    for ctl in CONTROLLERS.values():
        await ctl.stop()
