"""A real Alertmanager (the local stack's launcher) → the receiver with the bearer token →
exactly one TrainingRun, while Alertmanager keeps repeating the notification."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alerthelpers import TOKEN, ReceiverThread
from prometheus_client import REGISTRY

from mlops_localstack.alertmanager import AlertmanagerServer
from mlops_localstack.cluster import poll

pytestmark = pytest.mark.integration


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def alertmanager_for(tmp_path: Path) -> Iterator[Callable[..., AlertmanagerServer]]:
    started: list[AlertmanagerServer] = []

    def start(receiver_url: str, token: str) -> AlertmanagerServer:
        am = AlertmanagerServer(tmp_path / f"am{len(started)}", receiver_url=receiver_url,
                                token=token, group_wait="1s", group_interval="1s",
                                repeat_interval="2s")
        started.append(am)
        return am.start()

    yield start
    for am in started:
        am.stop()


def _alert(namespace: str) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"labels": {"alertname": "ModelFeatureDrift", "namespace": namespace,
                       "modeldeployment": "iris", "model": "iris", "variant": "champion",
                       "severity": "warning"},
            "annotations": {"summary": "drift"}, "startsAt": now,
            "generatorURL": "http://prometheus.local/graph"}


def test_alertmanager_notifies_the_receiver_once_per_episode_despite_repeats(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], alertmanager_for: Callable[..., AlertmanagerServer],
) -> None:
    make_deployment(cooldown="0s", max_concurrent=5)
    duplicates = _count("mlops_retrain_skipped_total", reason="duplicate")
    am = alertmanager_for(receiver.url, TOKEN)

    am.post_alerts([_alert(namespace)])

    [tr] = poll("the alert's TrainingRun", trainingruns, timeout=60)
    assert tr["metadata"]["annotations"]["mlops.dev/alert-name"] == "ModelFeatureDrift"
    # Alertmanager repeats the notification (repeat_interval 2s); each repeat is a duplicate
    poll("two repeats of the notification", lambda: _count(
        "mlops_retrain_skipped_total", reason="duplicate") - duplicates >= 2, timeout=60)
    assert [t["metadata"]["name"] for t in trainingruns()] == [tr["metadata"]["name"]]
    assert [a["labels"]["alertname"] for a in am.alerts()] == ["ModelFeatureDrift"]


def test_alertmanager_with_a_wrong_token_is_refused(
    receiver: ReceiverThread, make_deployment: Callable[..., dict], namespace: str,
    trainingruns: Callable[[], list[dict]], alertmanager_for: Callable[..., AlertmanagerServer],
) -> None:
    make_deployment(cooldown="0s")
    refused = _count("mlops_alert_webhook_requests_total", code="401")
    am = alertmanager_for(receiver.url, "not-the-token")

    am.post_alerts([_alert(namespace)])

    poll("Alertmanager's notification to be refused", lambda: _count(
        "mlops_alert_webhook_requests_total", code="401") - refused >= 1, timeout=60)
    assert trainingruns() == []
    assert "401" in (am.workdir / "alertmanager.log").read_text()
