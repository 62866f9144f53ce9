"""Hooks into kopf that the controllers need: its "succeeded" log lines of our handlers at
DEBUG (:func:`quiet`), its HA pause state followed by our workers (:data:`PEERING`), and no
namespace missed at startup when watching namespace patterns (:func:`watch_listed_namespaces`)."""

from __future__ import annotations

import logging
import weakref
from typing import Any

log = logging.getLogger(__name__)


class QuietSuccess(logging.Filter):
    """Logs kopf's "Handler 'x' succeeded." / "Activity 'x' succeeded." of the handlers named in
    :attr:`ids` at DEBUG instead of INFO (dropped unless DEBUG is on); anything else passes."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: set[str] = set()

    def add(self, what: str, handler_id: str) -> None:
        self.messages.add(f"{what} {handler_id!r} succeeded.")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.getMessage() not in self.messages:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


#: kopf's loggers of resource handlers and of probes, and what they log at DEBUG instead
QUIET: dict[str, QuietSuccess] = {}


def quiet(logger: str, what: str, handler_id: str) -> None:
    """Log the success of kopf handler ``handler_id`` (``what``: "Handler" for resource
    handlers on logger ``kopf.objects``, "Activity" for ``kopf.activities.<activity>``) at
    DEBUG."""
    filt = QUIET.get(logger)
    if filt is None:
        filt = QUIET[logger] = QuietSuccess()
        logging.getLogger(logger).addFilter(filt)
    filt.add(what, handler_id)


class Peering:
    """Whether kopf has paused this replica (HA peering: a live peer of higher priority, or one
    of equal priority, works; see kopf's peering docs).

    kopf keeps that state in one toggle per peering object, which it hands to its peering
    observer with every event of that object; :meth:`install` wraps that observer to learn the
    toggles. kopf pauses its own watch streams with them; the workers here wait on them too, so
    a passes queued before the pause (or due from a timer) do not run in a standby replica.
    Standalone (no peering): never paused.
    """

    def __init__(self) -> None:
        self._toggles: weakref.WeakSet[Any] = weakref.WeakSet()
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        try:
            from kopf._core.engines import peering
        except ImportError:  # pragma: no cover - another kopf layout: never paused here
            log.warning("kopf peering internals not found: workers do not follow its pause")
            return
        original = peering.process_peering_event
        toggles = self._toggles

        async def observe(*args: Any, conflicts_found: Any = None, **kwargs: Any) -> Any:
            if conflicts_found is not None:
                toggles.add(conflicts_found)
            return await original(*args, conflicts_found=conflicts_found, **kwargs)

        peering.process_peering_event = observe
        self.installed = True

    def watch(self, toggle: Any) -> None:
        """Follow one of kopf's pause toggles (what the wrapped observer does)."""
        self._toggles.add(toggle)

    def paused(self) -> bool:
        return any(t.is_on() for t in list(self._toggles))

    async def resumed(self) -> None:
        """Return once no toggle pauses this replica (at once when none does)."""
        while True:
            on = [t for t in list(self._toggles) if t.is_on()]
            if not on:
                return
            await on[0].wait_for(False)


#: kopf's pause state of this process
PEERING = Peering()


def watch_listed_namespaces() -> bool:
    """Let kopf start watching a namespace that appeared while it was starting.

    With namespace patterns (``--namespace 'team-*'``) kopf lists the namespaces, then starts a
    namespace watch, which lists them again and drops that second listing's objects (kopf
    1.45, ``observation.process_discovered_namespace_event``). A namespace created between the
    two lists was never watched until its next change: its objects sat unreconciled (a test
    namespace created while the operator started waited 68 s, until it was deleted). Here the
    second listing is taken too; adding a matching namespace that is already known is a no-op.
    Returns whether the hook is in place (False: another kopf layout, nothing changed).
    """
    try:
        from kopf._core.reactor import observation
    except ImportError:  # pragma: no cover - another kopf layout
        log.warning("kopf namespace observer not found: a namespace created during startup "
                    "is watched only after its next change")
        return False
    original = observation.process_discovered_namespace_event
    if getattr(original, "_takes_listing", False):
        return True

    async def process(*, raw_event: Any, namespaces: Any, insights: Any, **kwargs: Any) -> None:
        if raw_event.get("type") is not None:
            await original(raw_event=raw_event, namespaces=namespaces, insights=insights,
                           **kwargs)
            return
        async with insights.revised:
            observation.revise_namespaces(raw_events=[raw_event], insights=insights,
                                          namespaces=namespaces)
            insights.revised.notify_all()

    process._takes_listing = True  # type: ignore[attr-defined]
    process.__wrapped__ = original  # type: ignore[attr-defined]
    observation.process_discovered_namespace_event = process
    return True
