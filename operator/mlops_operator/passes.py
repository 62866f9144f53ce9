"""One reconcile pass of :mod:`mlops_operator.controller`: what ``reconcile(p)`` gets.

:class:`Pass` is the object as last seen, its :class:`Status` under construction (reads see the
pass's own writes; one patch at the end), the settings, a logger, and the controller running it
(its children cache, :meth:`Pass.flush`, :meth:`Pass.requeue`). :class:`Waiting` ends a pass
early without an error.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .conditions import get_condition, set_condition
from .kopfhooks import PEERING
from .settings import OperatorSettings

if TYPE_CHECKING:
    from .controller import Controller

_UNSET = object()


class Status:
    """The status of one object during one pass: reads see the pass's own writes; :attr:`changes`
    is what the end-of-pass patch sends (nothing when nothing changed)."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.current: dict[str, Any] = copy.deepcopy(dict(body.get("status") or {}))
        self.generation: int | None = (body.get("metadata") or {}).get("generation")
        self.changes: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.current.get(key, default)

    @property
    def phase(self) -> str | None:
        return self.current.get("phase")

    def set(self, **fields: Any) -> None:
        """Set status fields (None clears a field)."""
        for key, value in fields.items():
            if self.current.get(key, _UNSET) != value and not (
                    value is None and key not in self.current):
                self.changes[key] = value
                self.current[key] = value

    def observed(self) -> None:
        """Record that this generation's spec has been acted on."""
        self.set(observedGeneration=self.generation)

    def condition(self, type_: str) -> Mapping[str, Any]:
        """A condition as it stands (``{}`` when absent)."""
        return get_condition(self.current.get("conditions"), type_) or {}

    def cond(self, type_: str, status: bool | str, reason: str, message: str = "") -> bool:
        """Set a condition; True when its status flipped (a transition worth an Event)."""
        before = self.condition(type_).get("status")
        conditions = set_condition(self.current.get("conditions"), type_, status, reason,
                                   message, self.generation)
        if conditions != self.current.get("conditions"):
            self.set(conditions=conditions)
        return before != self.condition(type_).get("status")


class Waiting(Exception):  # noqa: N818 - a signal, not an error
    """Ends a pass early while a child is still working; its events (or ``p.requeue``) bring
    the next pass. Not an error: nothing is logged or counted."""


class _ObjectLogger(logging.LoggerAdapter):
    """Prefixes messages with the object's ``namespace/name``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['object']}] {msg}", kwargs  # type: ignore[index]


@dataclass
class Pass:
    """What one reconcile pass gets: the object, its status under construction, the settings."""

    body: dict[str, Any]
    status: Status
    settings: OperatorSettings
    logger: logging.LoggerAdapter
    requeue_after: float | None = None
    #: the controller running this pass (its children cache and status write)
    controller: Controller | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return self.body.get("metadata") or {}

    @property
    def spec(self) -> dict[str, Any]:
        return self.body.get("spec") or {}

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def namespace(self) -> str:
        return str(self.meta["namespace"])

    @property
    def uid(self) -> str:
        return str(self.meta["uid"])

    @property
    def generation(self) -> int | None:
        return self.meta.get("generation")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def requeue(self, seconds: float) -> None:
        """Run another pass after ``seconds`` even if nothing changes (the earliest ask wins)."""
        self.requeue_after = seconds if self.requeue_after is None else min(
            self.requeue_after, seconds)

    def flush(self) -> None:
        """Write the status changes made so far now (raises when the write fails, so the pass
        ends before its next side effect); the end-of-pass write sends only what follows."""
        if self.controller is not None and self.status.changes:
            self.controller.write_now(self)

    def ensure_active(self) -> None:
        """End the pass (:class:`Waiting`, nothing written) if kopf has paused this replica
        since the pass began: during an HA handover the replica that takes over runs the same
        object, so the paused one must not go on to create anything."""
        if self.controller is not None and PEERING.paused():
            self.status.changes = {}
            raise Waiting("kopf paused this replica")

    def child(self, kind: str, name: str) -> dict[str, Any] | None:
        """A child of this object (same namespace) as its watch last saw it, or None (not seen:
        not created yet, deleted, or the watch has not listed it yet — ask the API then)."""
        if self.controller is None:
            return None
        found = self.controller.children_seen.get((kind, self.namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def saw_child(self, body: Mapping[str, Any]) -> None:
        """Remember a child this pass created or read (until its watch event brings a newer
        one), so that the next pass need not ask for it again."""
        if self.controller is not None:
            self.controller.see_child(None, copy.deepcopy(dict(body)))
