"""One registry read per model per interval: who follows a model's aliases gets woken on a move.

Objects that depend on where a model's aliases point — a Promoted ModelVersion (does it still
hold its alias?), a ModelDeployment serving ``models:/m@champion`` — register interest with
:meth:`AliasWatch.follow`. One task reads each followed model's aliases every
``resync_seconds`` (``get_registered_model``: one call per model, whatever the number of
objects) and wakes the followers of a model whose aliases changed. Passes read the same cache
through :meth:`AliasWatch.aliases`, so steady state costs no registry call per object.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Wake = Callable[[], None]


class AliasWatch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._followers: dict[str, dict[str, Wake]] = {}
        self._aliases: dict[str, dict[str, str]] = {}
        self._read_at: dict[str, float] = {}
        self.reads = 0  # registry calls made (a test and a benchmark read it)

    def follow(self, model: str, follower: str, wake: Wake) -> None:
        """Wake ``follower`` (e.g. ``ModelVersion/ns/name``) when ``model``'s aliases move."""
        with self._lock:
            self._followers.setdefault(model, {})[follower] = wake

    def unfollow(self, follower: str, model: str | None = None) -> None:
        with self._lock:
            for name, followers in list(self._followers.items()):
                if model in (None, name):
                    followers.pop(follower, None)
                    if not followers:
                        del self._followers[name]

    def models(self) -> list[str]:
        with self._lock:
            return list(self._followers)

    def aliases(self, client: Any, model: str, max_age: float) -> dict[str, str]:
        """``{alias: version}`` of ``model``, read from the registry when older than ``max_age``."""
        with self._lock:
            fresh = time.monotonic() - self._read_at.get(model, -1e18) < max_age
            if fresh:
                return dict(self._aliases.get(model, {}))
        return self.read(client, model)

    def read(self, client: Any, model: str) -> dict[str, str]:
        """Read ``model``'s aliases now; wake its followers when they changed."""
        from .mlflow_rest import MlflowException

        try:
            found = {k: str(v) for k, v in (client.get_registered_model(model).aliases or {}).items()}
        except MlflowException as exc:
            if getattr(exc, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise
            found = {}
        with self._lock:
            self.reads += 1
            before = self._aliases.get(model)
            self._aliases[model] = found
            self._read_at[model] = time.monotonic()
            wake = list(self._followers.get(model, {}).values()) if (
                before is not None and before != found) else []
        for fn in wake:
            fn()
        return dict(found)

    async def run(self, client_factory: Callable[[], Any], interval: float) -> None:
        """Forever: every ``interval``, read each followed model whose cache is that old."""
        while True:
            await asyncio.sleep(interval)
            for model in self.models():
                with self._lock:
                    due = time.monotonic() - self._read_at.get(model, -1e18) >= interval * 0.9
                if not due:
                    continue
                try:
                    await asyncio.to_thread(self.read, client_factory(), model)
                except Exception as exc:  # MLflow down: the next round tries again
                    log.info("reading the aliases of %s failed: %s", model, exc)


#: The process-wide watch (started by the startup handler).
WATCH = AliasWatch()
