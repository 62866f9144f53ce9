"""The one controller shape every kind follows (see docs/architecture.md).

A :class:`Controller` is a level-triggered reconcile loop, like controller-runtime's:

* **Triggers.** kopf watches the kind and its children (``@kopf.on.event``); every event of an
  object, or of a child whose owner reference names it, puts the object's key on a work queue.
  A pass may also ask to run again later (:meth:`Pass.requeue`), and
  :class:`mlops_operator.aliases.AliasWatch` wakes the objects that follow a model's aliases.
* **One pass** (``reconcile(p)``, blocking, in a worker thread) reads the object as last seen,
  builds children with pure builders, creates or applies them through :mod:`mlops_operator.kube`,
  observes them, and records what it found in ``p.status``. The queue runs one pass per object at
  a time, and at most ``MLOPS_WORKERS`` passes at once.
* **One status write.** What the pass changed in ``p.status`` is merged into the status
  subresource in one patch at the end of the pass — also when the pass raised. A pass that must
  have a fact recorded before its next side effect (the MLflow run id before the Job) calls
  :meth:`Pass.flush` in between instead of ending and queueing itself again.
* **Children from the watch.** The child watch keeps the children's bodies
  (:meth:`Pass.child`): a pass reads a child as last seen instead of asking the API server; the
  child's next event brings the next pass anyway. A controller with many children keeps only
  the parts its passes read (``slim``).
* **Retry by kind of error.** ``kopf.TemporaryError(delay=…)`` → run again after ``delay``
  (a child not ready; MLflow down — its error has ``ramp`` set and is retried after the backoff
  below, up to ``delay``); ``kopf.PermanentError`` → wait for the next change of the
  object (bad input; the pass has set a condition and posted a Warning Event); a request the
  API server refused (403, :class:`mlops_operator.kube.Forbidden`: the operator's RBAC lacks a
  verb) → ``Ready=False/Forbidden`` naming the verb and resource, a Warning Event, one log line
  and another try after ``MLOPS_FORBIDDEN_RETRY_SECONDS``; the API server timing out,
  unreachable or answering 429/5xx → one warning line and the backoff below; anything else →
  logged with its traceback and retried with an exponential backoff.
* **HA.** With kopf peering, a replica that kopf pauses (a peer of higher priority works) runs
  no pass: its workers wait until kopf resumes it (:data:`PEERING`), also for keys already
  queued or due from a timer.
* **Quiet watches.** kopf logs "Handler '…' succeeded." at INFO for every watch event; for the
  watches that only feed the queue that is noise, so it is logged at DEBUG (errors stay).

A pass must be idempotent and cheap when there is nothing to do: it runs again on every event.
Deletion of state outside Kubernetes (an MLflow run) is a ``@kopf.on.delete`` handler next to
the reconcile function; children inside Kubernetes go by garbage collection.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import Counter

from . import GROUP, VERSION, kube
from .builders.common import MANAGED_BY, OPERATOR
from .kopfhooks import (  # noqa: F401 (re-exported)
    PEERING,
    QUIET,
    Peering,
    QuietSuccess,
    quiet,
    watch_listed_namespaces,
)
from .metrics import RECONCILE_ERRORS
from .passes import Pass, Status, Waiting, _ObjectLogger  # noqa: F401 (re-exported)
from .settings import get_settings
from .workqueue import Key, WorkQueue

log = logging.getLogger(__name__)

#: Retry delays (seconds) after unexpected errors, one step per consecutive failure.
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PASSES = Counter("mlops_reconcile_passes_total", "Reconcile passes run, by resource kind",
                 ["kind"])


def _older(body: Mapping[str, Any], than: Mapping[str, Any] | None) -> bool:
    """Whether ``body`` is an older version of the same object (same uid) than ``than``."""
    return than is not None and _rv(than) > _rv(body) and _uid(than) == _uid(body)


def _uid(body: Mapping[str, Any]) -> Any:
    return (body.get("metadata") or {}).get("uid")


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Controller:
    """A kind's reconcile loop: its cache of objects, its queue, its workers."""

    kind: str
    plural: str
    reconcile: Callable[[Pass], None]
    #: child kinds ``(group, version, plural)`` whose events wake their owner
    children: Iterable[tuple[str, str, str]] = ()
    #: called with the key of a deleted object (drop what the controller keeps about it)
    forget: Callable[[Key], None] | None = None
    #: what of a child's body to keep (the parts its passes read); None: all but managedFields
    slim: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    cache: dict[Key, dict[str, Any]] = field(default_factory=dict)
    #: the children's bodies by ``(kind, namespace, name)``, as their watch last saw them
    children_seen: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    _children_lock: threading.Lock = field(default_factory=threading.Lock)
    _queue: WorkQueue | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _failures: dict[Key, int] = field(default_factory=dict)
    _own_writes: dict[Key, int] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None
    _workers: int = 1

    # -- triggers ----------------------------------------------------------------------------
    def register(self) -> None:
        """Register the kopf watches that feed the queue (their successes logged at DEBUG) and
        follow kopf's peering pause."""
        kopf.on.event(GROUP, VERSION, self.plural, id=f"{self.kind}-events")(self._on_event)
        quiet("kopf.objects", "Handler", f"{self.kind}-events")
        for group, version, plural in self.children:
            kopf.on.event(group, version, plural, labels={MANAGED_BY: OPERATOR},
                          id=f"{self.kind}-children")(self._on_child_event)
        if self.children:
            quiet("kopf.objects", "Handler", f"{self.kind}-children")
        PEERING.install()
        watch_listed_namespaces()

    async def _on_event(self, event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        self._spawn_workers()
        self.observe(event.get("type"), copy.deepcopy(dict(body)))

    async def _on_child_event(self, event: Mapping[str, Any], body: kopf.Body,
                              **_: Any) -> None:
        self._spawn_workers()
        meta = body.get("metadata") or {}
        owners = [ref.get("name") or "" for ref in meta.get("ownerReferences") or []
                  if ref.get("kind") == self.kind and ref.get("apiVersion", "").startswith(GROUP)]
        if owners:
            self.see_child(event.get("type"), copy.deepcopy(dict(body)))
        for owner in owners:
            self.enqueue((meta.get("namespace") or "", owner))

    def see_child(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Keep a child's body (drop it when deleted; never go back to an older version)."""
        meta = body.get("metadata") or {}
        meta.pop("managedFields", None)  # most of a body's bytes; no pass reads them
        key = (body.get("kind") or "", meta.get("namespace") or "", meta.get("name") or "")
        if self.slim is not None and event_type != "DELETED":
            body = self.slim(body)
        if event_type == "DELETED":
            with self._children_lock:
                self.children_seen.pop(key, None)
            return
        with self._children_lock:  # the loop's thread (events) and workers (their own reads)
            if _older(body, than=self.children_seen.get(key)):
                return
            self.children_seen[key] = body

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Take a watch event into the cache and queue the object (not for our own writes)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            self.cache.pop(key, None)
            self._own_writes.pop(key, None)
            self._failures.pop(key, None)
            if self._queue is not None:
                self._queue.forget(key)
            if self.forget is not None:
                self.forget(key)
            return
        cached = self.cache.get(key)
        if cached is not None and _uid(cached) == _uid(body) and _rv(body) <= _rv(cached):
            # not newer than the cache: older than what our own status write returned, or a
            # version queued once already (the relist after a 410 or a reconnect)
            return
        self.cache[key] = body
        if self._own_writes.get(key) == _rv(body):
            return  # the echo of this controller's own status patch
        self.enqueue(key)

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        """Queue a pass for ``key`` (from any thread)."""
        if self._queue is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._queue.add(key, delay)
        else:
            self._loop.call_soon_threadsafe(self._queue.add, key, delay)

    # -- workers -----------------------------------------------------------------------------
    async def start(self, workers: int) -> None:
        """Prepare the queue and threads on the running loop (called from the startup handler)."""
        self._loop = asyncio.get_running_loop()
        self._queue = WorkQueue()
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix=f"{self.kind}-reconcile")

    def _spawn_workers(self) -> None:
        """Start the worker tasks from kopf's event-handling context, on the first event: tasks
        inherit its context variables, which ``kopf.info``/``kopf.warn`` need to post Events."""
        if self._tasks or self._queue is None:
            return
        self._tasks = [asyncio.create_task(self._work(), name=f"{self.kind}-worker-{i}")
                       for i in range(self._workers)]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking keys; let passes already running finish (up to ``grace`` seconds), so a
        pass does not post its Events or status after the event loop has closed."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            drained = asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            try:
                await asyncio.wait_for(drained, timeout=grace)
            except TimeoutError:
                log.warning("%s: passes still running after %ss at shutdown", self.kind, grace)

    async def _work(self) -> None:
        assert self._queue is not None and self._loop is not None
        while True:
            await PEERING.resumed()
            key = await self._queue.get()
            if PEERING.paused():  # kopf paused this replica while the worker waited for a key
                self._queue.done(key)
                self._queue.add(key)  # for when this replica works again
                continue
            delay: float | None = None
            try:
                body = self.cache.get(key)
                if body is not None:
                    run = contextvars.copy_context().run  # kopf's event poster lives there
                    delay = await self._loop.run_in_executor(self._executor, run, self._pass,
                                                             key, body)
            except Exception:  # never lose a worker
                log.exception("%s %s/%s: reconcile pass crashed", self.kind, *key)
                delay = BACKOFF[-1]
            finally:
                self._queue.done(key)
            if delay is not None and key in self.cache:
                self._queue.add(key, delay)

    def _pass(self, key: Key, body: dict[str, Any]) -> float | None:
        """One reconcile pass and its one status write; when to run again (None: on events)."""
        logger = _ObjectLogger(log, {"object": f"{key[0]}/{key[1]}"})
        p = Pass(body, Status(body), get_settings(), logger, controller=self)
        log.debug("%s %s: pass at resourceVersion %s", self.kind, p.key, _rv(body))
        PASSES.labels(kind=self.kind).inc()
        delay: float | None = None
        try:
            self.reconcile(p)
            self._failures.pop(key, None)
            delay = p.requeue_after
        except Waiting:
            self._failures.pop(key, None)
            delay = p.requeue_after
        except kopf.TemporaryError as exc:
            RECONCILE_ERRORS.labels(kind=self.kind, error="temporary").inc()
            delay = float(exc.delay or BACKOFF[0])
            if getattr(exc, "ramp", False):  # an outage: 1, 2, 5 s … up to the error's delay
                n = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(delay, BACKOFF[min(n, len(BACKOFF)) - 1])
            log.info("%s %s: %s (again in %ss)", self.kind, p.key, exc, delay)
        except kopf.PermanentError as exc:
            RECONCILE_ERRORS.labels(kind=self.kind, error="permanent").inc()
            log.warning("%s %s: %s (waiting for a change)", self.kind, p.key, exc)
        except kube.Forbidden as exc:
            delay = self._forbidden(p, str(exc))
        except Exception as exc:
            if kube.is_status(exc, 403):  # a call outside kube.py, or not RBAC (a quota)
                delay = self._forbidden(p, f"forbidden: {kube.error_message(exc)}")
            elif kube.is_transient(exc):  # the apiserver slow or restarting: no traceback
                RECONCILE_ERRORS.labels(kind=self.kind, error="apiserver").inc()
                n = self._failures[key] = self._failures.get(key, 0) + 1
                delay = BACKOFF[min(n, len(BACKOFF)) - 1]
                log.warning("%s %s: API server unavailable: %s (again in %ss)", self.kind,
                            p.key, kube.error_message(exc), delay)
            else:
                RECONCILE_ERRORS.labels(kind=self.kind, error="unexpected").inc()
                n = self._failures[key] = self._failures.get(key, 0) + 1
                delay = BACKOFF[min(n, len(BACKOFF)) - 1]
                log.exception("%s %s: reconcile failed (again in %ss)", self.kind, p.key, delay)
        if p.status.changes:
            delay = self._write_status(key, p, delay)
        return delay

    def _forbidden(self, p: Pass, message: str) -> float:
        """A refused request: ``Ready=False/Forbidden`` with the API server's words, a Warning
        Event when that is news, one log line (no traceback), a slow retry."""
        RECONCILE_ERRORS.labels(kind=self.kind, error="forbidden").inc()
        ready = p.status.condition("Ready")
        if ready.get("reason") != "Forbidden" or ready.get("message") != message[:32000]:
            kopf.warn(p.body, reason="Forbidden", message=message[:1024])
        p.status.cond("Ready", False, "Forbidden", message)
        delay = p.settings.forbidden_retry_seconds
        log.warning("%s %s: %s (again in %ss)", self.kind, p.key, message, delay)
        return delay

    def write_now(self, p: Pass) -> None:
        """Write the pass's status changes so far (:meth:`Pass.flush`); errors propagate (the
        object deleted meanwhile ends the pass quietly)."""
        try:
            updated = kube.patch_status(self.plural, p.namespace, p.name, p.status.changes)
        except Exception as exc:
            if kube.is_status(exc, 404):
                raise Waiting("deleted meanwhile") from exc
            raise
        p.status.changes = {}
        self._wrote((p.namespace, p.name), updated)

    def _wrote(self, key: Key, updated: dict[str, Any]) -> None:
        self._own_writes[key] = _rv(updated)
        cached = self.cache.get(key)
        if cached is None or _rv(updated) >= _rv(cached):
            self.cache[key] = updated

    def _write_status(self, key: Key, p: Pass, delay: float | None) -> float | None:
        try:
            updated = kube.patch_status(self.plural, p.namespace, p.name, p.status.changes)
        except Exception as exc:
            if kube.is_status(exc, 404):
                return None  # deleted meanwhile
            if isinstance(exc, kube.Forbidden) or kube.is_status(exc, 403):
                log.warning("%s %s: status write refused: %s (again in %ss)", self.kind, p.key,
                            exc, p.settings.forbidden_retry_seconds)
                return p.settings.forbidden_retry_seconds
            log.warning("%s %s: status write failed: %s", self.kind, p.key, exc)
            return min(delay or BACKOFF[2], BACKOFF[2])
        self._wrote(key, updated)
        return delay


#: Every controller of this process, started by the startup handler.
CONTROLLERS: dict[str, Controller] = {}


def controller(kind: str, plural: str, reconcile: Callable[[Pass], None],
               children: Iterable[tuple[str, str, str]] = (),
               forget: Callable[[Key], None] | None = None,
               slim: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Controller:
    """Create and register a kind's controller (once per process)."""
    ctl = Controller(kind, plural, reconcile, tuple(children), forget, slim)
    ctl.register()
    CONTROLLERS[kind] = ctl
    return ctl
