"""Bad requests create nothing; a template the apiserver rejects is a Warning Event and nothing
half-created; the receiver is fuzzed (hypothesis): never a 5xx, never a TrainingRun from an
invalid request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from alerthelpers import TOKEN, ReceiverThread, alert, notification, post
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_operator import API_VERSION, kube

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("token", "body", "status"),
    [
        (None, None, 401),
        ("wrong", None, 401),
        (TOKEN, b"{not json", 400),
        (TOKEN, b'{"version": "4", "status": "firing", "alerts": [{"status": "firing"}]}', 400),
        (TOKEN, b'{"version": "4", "status": "firing", "alerts": []' + b" " * 70_000 + b"}", 413),
    ],
    ids=["no-token", "wrong-token", "bad-json", "bad-schema", "oversize"],
)
def test_bad_requests_are_answered_with_an_error_and_create_nothing(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], token: str | None, body: bytes | None, status: int,
) -> None:
    make_deployment(cooldown="0s")
    resp = post(receiver.url, body if body is not None else notification(alert(namespace)),
                token=token)
    assert resp.status_code == status
    assert resp.json()["error"]
    assert trainingruns() == []
    # the same receiver does create from a good request: the 4xx above was not an accident
    good = post(receiver.url, notification(alert(namespace)))
    assert good.json()["results"][0]["action"] == "created"


def test_a_template_the_apiserver_rejects_is_a_warning_event_and_nothing_created(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], events: Callable[[str], list[dict]],
    kubectl: Callable[..., Any],
) -> None:
    """A quota of zero TrainingRuns in the namespace: the apiserver's admission refuses the
    create (403) like it would refuse any template it does not accept."""
    make_deployment(cooldown="0s")
    quota = {"apiVersion": "v1", "kind": "ResourceQuota",
             "metadata": {"name": "no-training", "namespace": namespace},
             "spec": {"hard": {"count/trainingruns.mlops.dev": "0"}}}
    kubectl("create", "-f", "-", input=json.dumps(quota))

    resp = post(receiver.url, notification(alert(namespace)))

    assert resp.status_code == 200
    [result] = resp.json()["results"]
    assert (result["action"], result["reason"]) == ("skipped", "rejected")
    assert "forbidden" in result["message"].lower() or "quota" in result["message"].lower()
    assert trainingruns() == []
    warnings = [e for e in events("iris") if e["reason"] == "RetrainRejected"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    kubectl("delete", "resourcequota", "no-training", "-n", namespace)
    # Alertmanager's next repeat, once the quota is gone: the retrain happens
    from mlops_localstack.cluster import poll

    poll("the create to be admitted", lambda: post(
        receiver.url, notification(alert(namespace))).json()["results"][0]["action"]
        in ("created", "skipped") and len(trainingruns()) == 1, timeout=30, interval=0.5)


# -- fuzz ------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=20)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=10), c, max_size=3), max_leaves=12)


def _mutated_alerts(namespace: str) -> st.SearchStrategy[dict]:
    """Alerts close to a valid one for the test's deployment, with one field replaced."""
    good = alert(namespace)
    field = st.sampled_from(["status", "alertname", "startsAt", "fingerprint", "annotations"])
    return st.tuples(field, json_values).map(
        lambda kv: {**good, "labels": {**good["labels"], "alertname": kv[1]}}
        if kv[0] == "alertname" else {**good, kv[0]: kv[1]})


def _count(namespace: str) -> int:
    return len(kube.list_(API_VERSION, "TrainingRun", namespace))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_never_5xx_and_never_a_trainingrun_from_an_invalid_request(
    receiver: ReceiverThread, make_deployment_once: None, namespace: str, data: st.DataObject,
) -> None:
    kind = data.draw(st.sampled_from(["bytes", "json", "mutated", "bad-auth"]))
    token: str | None = TOKEN
    if kind == "bytes":
        body: bytes = data.draw(st.binary(max_size=300))
    elif kind == "json":
        body = json.dumps(data.draw(json_values)).encode()
    elif kind == "mutated":
        body = json.dumps(notification(data.draw(_mutated_alerts(namespace)))).encode()
    else:  # a valid notification that would create a TrainingRun, with a bad token
        body = json.dumps(notification(alert(namespace, starts="2026-11-30T06:00:00Z"))).encode()
        # header values a client can send (aiohttp's HTTP parser answers a malformed request
        # with a plain-text 400 before any handler runs)
        printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
        token = data.draw(st.one_of(st.none(), st.text(printable, max_size=40).filter(
            lambda t: t.strip() != TOKEN)))
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    before = _count(namespace)
    try:
        resp = httpx.post(receiver.url, content=body, headers=headers, timeout=30)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client refused to send that header
    assert resp.status_code < 500, resp.text
    if kind != "mutated":
        assert 400 <= resp.status_code < 500, resp.text
    if resp.status_code != 200:
        assert resp.json()["error"]
        assert _count(namespace) == before


@pytest.fixture
def make_deployment_once(make_deployment: Callable[..., dict]) -> None:
    make_deployment(cooldown="0s", max_concurrent=10)
