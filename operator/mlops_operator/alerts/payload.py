"""Alertmanager's webhook payload (version 4), parsed and validated. Pure: no I/O.

Alertmanager POSTs one *notification* per alert group::

    {"version": "4", "status": "firing", "receiver": "mlops-operator", "groupKey": "...",
     "truncatedAlerts": 0, "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": "http://alertmanager:9093",
     "alerts": [{"status": "firing", "labels": {"alertname": "ModelFeatureDrift", ...},
                 "annotations": {...}, "startsAt": "2026-11-30T05:00:00.123Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "...",
                 "fingerprint": "a1b2c3d4e5f60718"}]}

What the receiver relies on is checked strictly (types are not coerced); fields it does not use
are ignored, so a newer Alertmanager that adds fields still works. An *episode* of an alert is
its fingerprint (a hash of its label set) plus its ``startsAt``: Alertmanager repeats the same
pair until the alert resolves, and a new firing of the same alert gets a new ``startsAt``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..builders.common import short_hash

#: RFC 3339 as Alertmanager writes it (Go's time.Time: up to nanoseconds, ``Z`` or an offset).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_FINGERPRINT = re.compile(r"[0-9A-Za-z]{1,63}")
MAX_ALERTS = 10_000


class PayloadError(ValueError):
    """The request body is not a valid version-4 webhook notification (→ HTTP 400)."""


def parse_time(text: str) -> tuple[datetime, int]:
    """An RFC 3339 timestamp as ``(aware UTC datetime to the second, nanoseconds)``."""
    m = _RFC3339.fullmatch(text)
    if not m:
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    nanos = int((m.group(7) or "0").ljust(9, "0"))
    try:
        base = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
        if m.group(9):
            sign = 1 if m.group(9) == "+" else -1
            offset = sign * (int(m.group(10)) * 60 + int(m.group(11)))
            if abs(offset) >= 24 * 60:
                raise ValueError("offset out of range")
            base -= timedelta(minutes=offset)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text[:64]!r} is not a valid time: {exc}") from None
    return base, nanos


def canonical_time(text: str) -> str:
    """One spelling per instant (UTC, nanoseconds): the same ``startsAt`` from any sender."""
    when, nanos = parse_time(text)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def to_datetime(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime (microsecond precision)."""
    when, nanos = parse_time(text)
    return when.replace(microsecond=nanos // 1000)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Alert(_Strict):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field(alias="startsAt")
    ends_at: str | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL")
    fingerprint: str = ""

    @field_validator("labels")
    @classmethod
    def _alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("an alert needs a non-empty alertname label")
        return labels

    @field_validator("starts_at")
    @classmethod
    def _time(cls, text: str) -> str:
        return canonical_time(text)

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, text: str) -> str:
        if text and not _FINGERPRINT.fullmatch(text):
            raise ValueError("fingerprint must be 1-63 letters or digits")
        return text

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    @property
    def key(self) -> str:
        """The alert's identity: Alertmanager's fingerprint, else a hash of its labels."""
        return self.fingerprint or short_hash(json.dumps(sorted(self.labels.items())), 16)

    @property
    def episode(self) -> str:
        """One firing of the alert: a hash of (fingerprint, startsAt), 10 hex digits."""
        return episode_hash(self.key, self.starts_at)


class Notification(_Strict):
    """A webhook notification (Alertmanager's payload version 4)."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Alert] = Field(max_length=MAX_ALERTS)


def episode_hash(fingerprint: str, starts_at: str) -> str:
    """The dedupe key of one alert episode (stable across repeats, senders and restarts)."""
    return short_hash(f"{fingerprint}|{starts_at}", 10)


def _describe(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_notification(body: bytes) -> Notification:
    """The notification in ``body``, or :class:`PayloadError` saying what is wrong."""
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError(f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (Alertmanager webhook payload version 4)")
    try:
        return Notification.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(f"not an Alertmanager webhook payload v4: {_describe(exc)}") from None
    except RecursionError:
        raise PayloadError("body nests too deeply") from None
