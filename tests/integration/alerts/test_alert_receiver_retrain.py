"""The receiver against the real apiserver: exactly one TrainingRun per alert episode, cooldown,
maxConcurrent, resolved alerts, lineage, Events, and ``last_retrain`` of what it created."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from alerthelpers import TOKEN, ReceiverThread, alert, notification, post
from prometheus_client import REGISTRY

from mlops_localstack.cluster import poll
from mlops_operator.alerts import last_retrain

pytestmark = pytest.mark.integration


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("mlops_retrain_skipped_total", {"reason": reason}) or 0.0


async def _post_many(url: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(client.post(url, content=data, headers=headers)
                                           for _ in range(n))))


def test_100_concurrent_duplicates_give_one_trainingrun_with_lineage(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], events: Callable[[str], list[dict]],
) -> None:
    md = make_deployment(cooldown="1h", max_concurrent=1)
    body = notification(alert(namespace))
    before = skipped("duplicate")

    responses = asyncio.run(_post_many(receiver.url, body, 100))

    assert [r.status_code for r in responses] == [200] * 100
    actions = [r.json()["results"][0]["action"] for r in responses]
    assert actions.count("created") == 1, actions
    assert actions.count("skipped") == 99
    reasons = {r.json()["results"][0].get("reason") for r in responses} - {None}
    assert reasons == {"duplicate"}  # never "cooldown": a repeat is recognised as itself
    assert skipped("duplicate") - before == 99

    [tr] = trainingruns()
    meta = tr["metadata"]
    created = next(r.json()["results"][0] for r in responses
                   if r.json()["results"][0]["action"] == "created")
    assert created["trainingRun"] == meta["name"]
    assert created["deployment"] == f"{namespace}/iris"
    assert meta["name"].startswith("iris-retrain-")
    assert meta["labels"]["mlops.dev/deployment"] == "iris"
    assert meta["labels"]["mlops.dev/alert-fingerprint"] == "a1b2c3d4e5f60718"
    assert meta["annotations"]["mlops.dev/alert-name"] == "ModelFeatureDrift"
    assert meta["annotations"]["mlops.dev/alert-starts-at"] == "2026-11-30T05:00:00.000000001Z"
    assert [(o["kind"], o["uid"]) for o in meta["ownerReferences"]] == [
        ("ModelDeployment", md["metadata"]["uid"])]
    assert tr["spec"]["model"] == "iris" and tr["spec"]["dataset"] == {"uri": "builtin://iris"}

    started = [e for e in events("iris") if e["reason"] == "RetrainStarted"]
    assert len(started) == 1 and meta["name"] in started[0]["message"]
    status = last_retrain(trainingruns())
    assert status is not None
    assert (status["alert"], status["trainingRun"]) == ("ModelFeatureDrift", meta["name"])
    assert status["time"][:16] == meta["creationTimestamp"][:16]

    # Alertmanager's repeat later (or after an operator restart): still one
    again = post(receiver.url, body)
    assert again.json()["results"][0]["reason"] == "duplicate"
    assert len(trainingruns()) == 1


def test_cooldown_skips_a_new_episode_until_it_is_over(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], events: Callable[[str], list[dict]],
) -> None:
    make_deployment(cooldown="3s", max_concurrent=10)
    first = post(receiver.url, notification(alert(namespace, starts="2026-11-30T05:00:00Z")))
    assert first.json()["results"][0]["action"] == "created"
    before = skipped("cooldown")

    second = notification(alert(namespace, starts="2026-11-30T05:10:00Z"))
    inside = post(receiver.url, second).json()["results"][0]
    assert (inside["action"], inside["reason"]) == ("skipped", "cooldown")
    assert len(trainingruns()) == 1
    assert skipped("cooldown") - before >= 1
    assert any(e["reason"] == "RetrainSkipped" and "cooldown" in e["message"]
               for e in events("iris"))

    after = poll("the cooldown to end", lambda: (
        r := post(receiver.url, second).json()["results"][0])["action"] == "created" and r,
        timeout=30, interval=0.5)
    assert after["trainingRun"] != first.json()["results"][0]["trainingRun"]
    assert len(trainingruns()) == 2


def test_max_concurrent_holds_until_a_run_finishes(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], kubectl: Callable[..., Any],
) -> None:
    make_deployment(cooldown="0s", max_concurrent=2)
    episodes = [alert(namespace, starts=f"2026-11-30T05:0{i}:00Z") for i in range(4)]
    results = [post(receiver.url, notification(a)).json()["results"][0] for a in episodes]
    assert [r["action"] for r in results] == ["created", "created", "skipped", "skipped"]
    assert {r.get("reason") for r in results[2:]} == {"max-concurrent"}
    assert len(trainingruns()) == 2

    done = results[0]["trainingRun"]
    kubectl("patch", "trainingrun", done, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"phase": "Succeeded"}}))
    third = post(receiver.url, notification(episodes[2])).json()["results"][0]
    assert third["action"] == "created"
    fourth = post(receiver.url, notification(episodes[3])).json()["results"][0]
    assert fourth["reason"] == "max-concurrent"
    assert len(trainingruns()) == 3


def test_concurrent_distinct_episodes_respect_max_concurrent(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]],
) -> None:
    """The per-deployment lock makes check-then-create atomic: 20 different episodes at once,
    maxConcurrent 3 → exactly 3."""
    make_deployment(cooldown="0s", max_concurrent=3)

    async def many() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(timeout=60) as client:
            return list(await asyncio.gather(*(
                client.post(receiver.url, headers=headers, json=notification(
                    alert(namespace, starts=f"2026-11-30T05:{i:02d}:00Z")))
                for i in range(20))))

    responses = asyncio.run(many())
    actions = [r.json()["results"][0]["action"] for r in responses]
    assert actions.count("created") == 3
    assert len(trainingruns()) == 3


def test_resolved_unknown_and_unmatched_alerts_create_nothing_and_say_why(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], kubectl: Callable[..., Any],
) -> None:
    make_deployment(cooldown="0s", max_concurrent=5)
    make_deployment(name="gone", cooldown="0s")
    kubectl("delete", "modeldeployment", "gone", "-n", namespace)
    body = notification(
        alert(namespace, status="resolved"),
        alert(namespace, name="SomethingElse", fingerprint="b1"),
        alert(namespace, deployment="gone", fingerprint="b2"),
        alert(namespace, deployment="never-existed", fingerprint="b3"),
        alert("other-namespace", fingerprint="b4"),
        alert(namespace, deployment="", fingerprint="b5", model="not-served"),
        {**alert(namespace, fingerprint="b6"), "labels": {"alertname": "ModelFeatureDrift"}},
    )
    resp = post(receiver.url, body)
    assert resp.status_code == 200
    got = [(r["action"], r.get("reason")) for r in resp.json()["results"]]
    assert got == [("skipped", "resolved"), ("skipped", "not-a-retrain-alert"),
                   ("skipped", "no-deployment"), ("skipped", "no-deployment"),
                   ("skipped", "namespace-not-watched"), ("skipped", "no-deployment"),
                   ("skipped", "no-deployment")]
    assert trainingruns() == []


def test_an_alert_matched_by_the_model_label(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]],
) -> None:
    make_deployment()
    resp = post(receiver.url, notification(alert(namespace, deployment="")))
    [result] = resp.json()["results"]
    assert result["action"] == "created" and result["deployment"] == f"{namespace}/iris"
    assert len(trainingruns()) == 1


class _DiesAfterCreating(BaseException):
    """Stands for the process dying between the create and the answer (not an Exception, so
    nothing in the receiver handles it)."""


def test_a_receiver_that_dies_after_creating_leaves_one_run_for_the_resend(
    make_deployment: Callable[..., dict], namespace: str, kube_on_cluster: None,
    trainingruns: Callable[[], list[dict]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alertmanager gets no answer and sends again, to a restarted receiver with no memory:
    the deterministic name finds the first run."""
    from alerthelpers import ReceiverThread as Thread

    from mlops_localstack.procs import free_port
    from mlops_operator.alerts import ReceiverConfig
    from mlops_operator.alerts.service import Retrainer

    make_deployment(cooldown="1h")
    body = notification(alert(namespace))

    def die(self: Retrainer, *args: object, **kwargs: object) -> None:
        raise _DiesAfterCreating

    config = ReceiverConfig(port=free_port(), host="127.0.0.1", token=TOKEN,
                            namespaces=(namespace,))
    with monkeypatch.context() as patch:
        patch.setattr(Retrainer, "_event", die)  # the first thing after the create
        first = Thread(config).start()
        try:
            with pytest.raises(httpx.HTTPError):
                post(first.url, body)  # the connection drops: no answer
        finally:
            first.stop()
    assert len(trainingruns()) == 1

    restarted = Thread(ReceiverConfig(port=free_port(), host="127.0.0.1", token=TOKEN,
                                      namespaces=(namespace,))).start()
    try:
        result = post(restarted.url, body).json()["results"][0]
    finally:
        restarted.stop()
    assert (result["action"], result["reason"]) == ("skipped", "duplicate")
    assert [t["metadata"]["name"] for t in trainingruns()] == [result["trainingRun"]]


def test_a_group_of_alerts_is_handled_in_parallel_and_answered_in_order(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]],
) -> None:
    for name in ("a", "b", "c"):
        make_deployment(name=name, cooldown="0s", max_concurrent=2)
    alerts = [alert(namespace, deployment=name, fingerprint=f"{name}{i}",
                    starts=f"2026-11-30T05:0{i}:00Z")
              for i in range(4) for name in ("a", "b", "c")]
    results = post(receiver.url, notification(*alerts)).json()["results"]
    assert [r["fingerprint"] for r in results] == [a["fingerprint"] for a in alerts]
    for name in ("a", "b", "c"):
        mine = [r for r in results if r["deployment"] == f"{namespace}/{name}"]
        assert sorted(r["action"] for r in mine) == ["created", "created", "skipped", "skipped"]
        assert {r.get("reason") for r in mine if r["action"] == "skipped"} == {"max-concurrent"}
    assert len(trainingruns()) == 6
