"""The one startup handler (kopf settings, our settings, /metrics, the controllers' workers and
the alias watch), its cleanup, and the readiness probe.

Without an MLflow tracking URI the operator does not crash (a restart would not help): it logs
an ERROR naming ``MLOPS_MLFLOW_TRACKING_URI``, starts no worker (nothing is reconciled, no
webhook is served) and its readiness probe — kopf's ``/healthz``, which answers from the
``@kopf.on.probe`` handlers — fails with the same message."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import kopf

from .. import GROUP
from ..alerts import start_receiver, stop_receiver
from ..aliases import WATCH
from ..controller import CONTROLLERS, quiet
from ..metrics import serve_metrics
from ..mlflow_utils import make_client
from ..settings import get_settings

log = logging.getLogger(__name__)


_tasks: list[asyncio.Task[None]] = []
_receiver: list[Any] = []


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: the controllers watch with ``on.event`` and compare what they see
    themselves; kopf's one changing handler is the TrainingRun's ``on.delete``, which needs
    none. kopf's annotation storage cost a PATCH per object after its first event (the
    ``last-handled-configuration`` annotation, written even when no create handler exists)
    and a deep copy of every event's body. With nothing stored every event is a "creation"
    without handlers, which kopf skips. An ``on.create``/``on.update``/``on.field``/
    ``on.resume`` handler would need the real storage back
    (``tests/unit/test_controller.py`` fails then)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


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
    settings.persistence.diffbase_storage = NoDiffBase()
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
    if cfg.missing:
        # not a crash (a restart would not help): not ready, nothing reconciled, said plainly
        log.error("%s", cfg.missing)
        if cfg.metrics_port:
            _serve_metrics(cfg)
        return
    if cfg.metrics_port:
        _serve_metrics(cfg)
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


def _serve_metrics(cfg: Any) -> None:
    try:
        serve_metrics(cfg.metrics_port, cfg.metrics_host)
    except OSError as exc:
        raise kopf.PermanentError(
            f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {exc}"
        ) from exc


@kopf.on.probe(id="configured")
def configured(**_: Any) -> bool:
    """Readiness (kopf's ``/healthz`` answers 500 while a probe fails): the settings the
    operator cannot work without are there."""
    missing = get_settings().missing
    if missing:
        raise kopf.PermanentError(missing)
    return True


class _FailedProbe(logging.Filter):
    """aiohttp logs every failed probe request with two tracebacks (kopf's probe endpoint lets
    the handlers' error out); kopf has said why already, in one ERROR line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from kopf._core.engines.activities import ActivityError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ActivityError)


quiet("kopf.activities.probe", "Activity", "configured")  # every probe, every few seconds
logging.getLogger("aiohttp.server").addFilter(_FailedProbe())


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
