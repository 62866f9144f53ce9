"""The operator killed between creating the retraining TrainingRun and answering Alertmanager:
after a restart, Alertmanager's resend finds that run — still exactly one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from alerthelpers import TOKEN, alert, notification, post

from mlops_localstack.cluster import poll
from mlops_localstack.procs import ComponentExited, free_port

pytestmark = pytest.mark.integration


def test_killed_after_the_create_and_before_the_answer_still_one_trainingrun(
    operator: Any, make_deployment: Callable[..., dict], kubectl: Any, namespace: str,
) -> None:
    port = free_port()
    env = {"MLOPS_ALERT_RECEIVER_PORT": str(port), "MLOPS_ALERT_RECEIVER_HOST": "127.0.0.1",
           "MLOPS_ALERT_RECEIVER_TOKEN": TOKEN}
    operator.restart(**env, MLOPS_FAILPOINT="after-retrain-created")
    make_deployment("iris")
    url = f"http://127.0.0.1:{port}/api/v1/alerts"
    body = notification(alert(namespace))

    def runs() -> list[dict[str, Any]]:
        out = kubectl("get", "trainingruns", "-n", namespace, "-o", "json")
        return json.loads(out.stdout)["items"]

    with pytest.raises(httpx.HTTPError):  # the process exits before it answers
        post(url, body)
    poll("the operator to exit at the failpoint", lambda: not operator.alive(), timeout=60)
    assert "failpoint after-retrain-created reached" in operator.logs()
    (created,) = runs()
    try:
        operator.restart(**env)
    except ComponentExited as exc:  # pragma: no cover - shows the log if the restart fails
        raise AssertionError(operator.logs()[-3000:]) from exc

    def answered() -> httpx.Response | None:
        try:
            return post(url, body)  # Alertmanager's resend of the same notification
        except httpx.HTTPError:
            return None

    r = poll("the restarted receiver to answer", answered, timeout=60)
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["action"] == "skipped" and result["reason"] == "duplicate", result
    assert [t["metadata"]["name"] for t in runs()] == [created["metadata"]["name"]]
