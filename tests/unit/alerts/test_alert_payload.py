"""Parsing Alertmanager's webhook payload (v4): what is accepted, what is a 400, episode keys."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_operator.alerts.payload import (
    PayloadError,
    canonical_time,
    episode_hash,
    parse_notification,
    to_datetime,
)


def alert(**over: Any) -> dict[str, Any]:
    base = {
        "status": "firing",
        "labels": {"alertname": "ModelFeatureDrift", "namespace": "ml", "modeldeployment": "iris"},
        "annotations": {"summary": "drift"},
        "startsAt": "2026-11-30T05:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "a1b2c3d4e5f60718",
    }
    base.update(over)
    return base


def payload(*alerts: dict[str, Any], **over: Any) -> bytes:
    body = {"version": "4", "status": "firing", "receiver": "mlops-operator",
            "groupKey": "{}:{alertname=\"ModelFeatureDrift\"}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": list(alerts) or [alert()]}
    body.update(over)
    return json.dumps(body).encode()


def test_a_real_alertmanager_payload_parses() -> None:
    n = parse_notification(payload(alert(), alert(status="resolved", fingerprint="ff")))
    assert [a.status for a in n.alerts] == ["firing", "resolved"]
    first = n.alerts[0]
    assert first.name == "ModelFeatureDrift"
    assert first.key == "a1b2c3d4e5f60718"
    assert first.starts_at == "2026-11-30T05:00:00.123456789Z"
    assert len(first.episode) == 10


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    n = parse_notification(payload(alert(newField={"x": 1}), somethingNew=True))
    assert len(n.alerts) == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON object"),
        (b'"x"', "JSON object"),
        (payload(version="3"), "version"),
        (payload(version=4), "version"),
        (payload(alerts="nope"), "alerts"),
        (payload(alert(status="pending")), "status"),
        (payload(alert(labels={"namespace": "ml"})), "alertname"),
        (payload(alert(labels={"alertname": "X", "n": 1})), "labels"),
        (payload(alert(startsAt="yesterday")), "startsAt"),
        (payload(alert(startsAt="2026-13-01T00:00:00Z")), "startsAt"),
        (payload(alert(startsAt=12)), "startsAt"),
        (payload(alert(fingerprint="../../x")), "fingerprint"),
        (payload(truncatedAlerts=-1), "truncatedAlerts"),
        (payload(truncatedAlerts=True), "truncatedAlerts"),
    ],
)
def test_invalid_bodies_are_payload_errors_saying_where(body: bytes, fragment: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_notification(body)
    assert fragment in str(err.value)


def test_alerts_without_a_fingerprint_get_a_stable_one_from_their_labels() -> None:
    a = parse_notification(payload(alert(fingerprint=""))).alerts[0]
    b = parse_notification(payload(alert(fingerprint="", labels={
        "modeldeployment": "iris", "namespace": "ml", "alertname": "ModelFeatureDrift"}))).alerts[0]
    c = parse_notification(payload(alert(fingerprint="", labels={
        "modeldeployment": "other", "namespace": "ml", "alertname": "ModelFeatureDrift"}))).alerts[0]
    assert a.key == b.key != c.key
    assert len(a.key) == 16


def test_one_instant_has_one_spelling_so_one_episode() -> None:
    spellings = ["2026-11-30T05:00:00.5Z", "2026-11-30T05:00:00.500000000Z",
                 "2026-11-30T06:00:00.5+01:00", "2026-11-30T04:30:00.5-00:30",
                 "2026-11-30t05:00:00.5z"]
    assert {canonical_time(s) for s in spellings} == {"2026-11-30T05:00:00.500000000Z"}
    assert canonical_time("2026-11-30T05:00:00Z") != canonical_time("2026-11-30T05:00:01Z")
    assert to_datetime("2026-11-30T05:00:00.123456789Z").microsecond == 123456


def test_episode_keys_differ_by_fingerprint_and_by_start() -> None:
    keys = {episode_hash(fp, t) for fp in ("a", "b") for t in ("t1", "t2")}
    assert len(keys) == 4
    assert episode_hash("a", "t1") == episode_hash("a", "t1")


def test_a_new_firing_of_the_same_alert_is_a_new_episode() -> None:
    one = parse_notification(payload(alert())).alerts[0]
    again = parse_notification(payload(alert())).alerts[0]
    later = parse_notification(payload(alert(startsAt="2026-11-30T07:00:00Z"))).alerts[0]
    assert one.episode == again.episode != later.episode
    assert one.key == later.key


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=512))
def test_any_bytes_either_parse_or_raise_payload_error(body: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_notification(body)


@given(st.dictionaries(st.sampled_from(["version", "status", "alerts", "receiver",
                                        "truncatedAlerts", "groupLabels"]), json_values))
def test_any_json_object_either_parses_or_raises_payload_error(body: dict) -> None:
    with contextlib.suppress(PayloadError):
        parse_notification(json.dumps(body).encode())


@given(st.fixed_dictionaries({}, optional={
    "status": json_values, "labels": json_values, "startsAt": json_values | st.text(),
    "fingerprint": json_values, "annotations": json_values}))
def test_any_alert_object_either_parses_or_raises_payload_error(a: dict) -> None:
    with contextlib.suppress(PayloadError):
        parse_notification(payload(a))
