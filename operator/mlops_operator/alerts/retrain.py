"""What an alert does to a ModelDeployment: pure decisions and the TrainingRun it builds.

No I/O here (the receiver's :mod:`~mlops_operator.alerts.service` reads and writes the API):

* :func:`build_retrain_trainingrun` — the TrainingRun of one alert episode, named
  deterministically (``<deployment>-retrain-<episode hash>``) so that a repeat, a concurrent
  duplicate or a retry after a crash finds the first one (create → 409) instead of making another;
* :func:`decide` — duplicate / cooldown / max-concurrent / create, from the deployment's
  TrainingRuns (the dedupe state lives in the API, in these objects' labels, not in memory);
* :func:`last_retrain` — ``status.lastRetrain`` of a ModelDeployment from its TrainingRuns (the
  ModelDeployment controller calls it; the receiver never writes a deployment's status).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import API_VERSION
from ..api.common import parse_duration
from ..builders.common import (
    LABEL_DEPLOYMENT,
    LABEL_MODEL,
    MANAGED_BY_LABELS,
    child_name,
    label_value,
    owner_reference,
)
from .payload import Alert, to_datetime

LABEL_ALERT_FINGERPRINT = "mlops.dev/alert-fingerprint"
LABEL_ALERT_EPISODE = "mlops.dev/alert-episode"  # hash of (fingerprint, startsAt)
ANN_ALERT_NAME = "mlops.dev/alert-name"
ANN_ALERT_FINGERPRINT = "mlops.dev/alert-fingerprint"
ANN_ALERT_STARTS_AT = "mlops.dev/alert-starts-at"
ANN_ALERT_GENERATOR = "mlops.dev/alert-generator-url"
ANN_RETRAIN_STARTED = "mlops.dev/retrain-started-at"  # when the receiver created it (µs)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Decision:
    """What to do with one firing alert for one deployment."""

    action: str  # "create" or "skip"
    reason: str = ""  # for skips: duplicate | cooldown | max-concurrent
    message: str = ""
    existing: str | None = None  # the duplicate's name


def isoformat(when: datetime) -> str:
    """``2026-11-30T05:00:00.123456Z`` (UTC, microseconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trainingrun_name(deployment: str, alert: Alert) -> str:
    """The one name the TrainingRun of this alert episode can have."""
    return child_name(deployment, f"retrain-{alert.episode}")


def deployment_selector(deployment: str) -> str:
    """Label selector of a deployment's TrainingRuns (alert-started ones and any labelled so)."""
    return f"{LABEL_DEPLOYMENT}={label_value(deployment)}"


def build_retrain_trainingrun(md: Mapping[str, Any], alert: Alert, now: datetime) -> dict:
    """The TrainingRun an alert episode starts, from ``spec.retrain.template``.

    Owned by the ModelDeployment (controller reference): it exists for that deployment, its
    events wake the deployment's controller (which records ``status.lastRetrain``), and deleting
    the deployment garbage-collects the retrains it started (``kubectl delete md --cascade=orphan``
    keeps them).
    """
    meta = md["metadata"]
    spec = md["spec"]
    name = trainingrun_name(meta["name"], alert)
    annotations = {
        ANN_ALERT_NAME: alert.name,
        ANN_ALERT_FINGERPRINT: alert.key,
        ANN_ALERT_STARTS_AT: alert.starts_at,
        ANN_RETRAIN_STARTED: isoformat(now),
    }
    if alert.generator_url:
        annotations[ANN_ALERT_GENERATOR] = alert.generator_url[:2048]
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRun",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                **MANAGED_BY_LABELS,
                LABEL_DEPLOYMENT: label_value(meta["name"]),
                LABEL_MODEL: label_value(spec["model"]),
                LABEL_ALERT_FINGERPRINT: label_value(alert.key),
                LABEL_ALERT_EPISODE: alert.episode,
            },
            "annotations": annotations,
            "ownerReferences": [owner_reference("ModelDeployment", meta["name"], meta["uid"])],
        },
        "spec": copy.deepcopy(spec["retrain"]["template"]),
    }


def started_at(tr: Mapping[str, Any]) -> datetime | None:
    """When the receiver created this TrainingRun (its annotation, else creationTimestamp)."""
    meta = tr.get("metadata") or {}
    for text in ((meta.get("annotations") or {}).get(ANN_RETRAIN_STARTED),
                 meta.get("creationTimestamp")):
        if isinstance(text, datetime):
            return text.astimezone(UTC)
        if text:
            try:
                return to_datetime(str(text))
            except ValueError:
                continue
    return None


def _by_alert(trainingruns: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [tr for tr in trainingruns
            if ((tr.get("metadata") or {}).get("labels") or {}).get(LABEL_ALERT_EPISODE)]


def is_active(tr: Mapping[str, Any]) -> bool:
    """Counts against ``maxConcurrent``: not Succeeded/Failed and not being deleted."""
    meta = tr.get("metadata") or {}
    phase = (tr.get("status") or {}).get("phase")
    return phase not in TERMINAL_PHASES and not meta.get("deletionTimestamp")


def cooldown_remaining(
    trainingruns: Iterable[Mapping[str, Any]], cooldown: timedelta, now: datetime
) -> timedelta:
    """How long until the cooldown after the newest alert-started TrainingRun is over (≥ 0)."""
    times = [t for t in (started_at(tr) for tr in _by_alert(trainingruns)) if t is not None]
    if not times:
        return timedelta(0)
    return max(timedelta(0), max(times) + cooldown - now)


def decide(
    trainingruns: Iterable[Mapping[str, Any]], episode: str, retrain: Mapping[str, Any],
    now: datetime,
) -> Decision:
    """Create, or skip with a reason, given the deployment's TrainingRuns.

    Checked in this order: the episode already has its TrainingRun (duplicate), the newest
    alert-started run is younger than ``cooldown``, ``maxConcurrent`` of the deployment's runs
    (alert-started or not) are neither Succeeded nor Failed.
    """
    every = list(trainingruns)
    runs = _by_alert(every)
    for tr in runs:
        if tr["metadata"]["labels"].get(LABEL_ALERT_EPISODE) == episode:
            return Decision("skip", "duplicate", "this alert episode already started "
                            f"TrainingRun {tr['metadata']['name']}", tr["metadata"]["name"])
    cooldown = parse_duration(str(retrain.get("cooldown") or "1h"))
    left = cooldown_remaining(runs, cooldown, now)
    if left > timedelta(0):
        return Decision("skip", "cooldown", f"cooldown {retrain.get('cooldown') or '1h'}: "
                        f"{left.total_seconds():.0f}s left since the last retrain")
    limit = int(retrain.get("maxConcurrent") or 1)
    active = sorted(tr["metadata"]["name"] for tr in every if is_active(tr))
    if len(active) >= limit:
        return Decision("skip", "max-concurrent", f"maxConcurrent {limit} reached: "
                        f"{', '.join(active[:5])} still running")
    return Decision("create")


def last_retrain(trainingruns: list[dict]) -> dict | None:
    """``status.lastRetrain`` (``{time, alert, trainingRun}``) from a deployment's TrainingRuns.

    ``trainingruns`` are the TrainingRuns labelled ``mlops.dev/deployment=<name>`` (others
    without the alert labels are ignored); the newest one started by an alert wins. None when
    alerts never started one.
    """
    best: tuple[datetime, str] | None = None
    chosen: Mapping[str, Any] | None = None
    for tr in _by_alert(trainingruns):
        when = started_at(tr)
        if when is None:
            continue
        key = (when, tr["metadata"].get("name") or "")
        if best is None or key > best:
            best, chosen = key, tr
    if best is None or chosen is None:
        return None
    meta = chosen["metadata"]
    return {
        "time": best[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "alert": (meta.get("annotations") or {}).get(ANN_ALERT_NAME) or "",
        "trainingRun": meta.get("name") or "",
    }
