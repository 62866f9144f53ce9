"""Kubernetes-style status conditions (``Ready``, ``Progressing``, ``Degraded``, ...)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return a new list with condition ``type_`` set.

    ``lastTransitionTime`` changes only when the status flips, as the API conventions say.
    """
    status_str = status if isinstance(status, str) else ("True" if status else "False")
    result: list[dict[str, Any]] = []
    found = False
    for cond in conditions or []:
        cond = dict(cond)
        if cond.get("type") == type_:
            found = True
            if cond.get("status") != status_str:
                cond["lastTransitionTime"] = now_iso()
            cond.update(status=status_str, reason=reason, message=message[:32000])
            if observed_generation is not None:
                cond["observedGeneration"] = observed_generation
        result.append(cond)
    if not found:
        new = {
            "type": type_,
            "status": status_str,
            "reason": reason,
            "message": message[:32000],
            "lastTransitionTime": now_iso(),
        }
        if observed_generation is not None:
            new["observedGeneration"] = observed_generation
        result.append(new)
    return result


def get_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None
