"""The bearer token from a Secret on the real apiserver, and its rotation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from alerthelpers import ReceiverThread, alert, notification, post

from mlops_localstack.cluster import poll
from mlops_localstack.procs import free_port
from mlops_operator.alerts import ReceiverConfig

pytestmark = pytest.mark.integration


def test_the_token_comes_from_the_secret_and_follows_its_rotation(
    kube_on_cluster: None, make_deployment: Callable[..., dict], namespace: str,
    kubectl: Callable[..., Any], trainingruns: Callable[[], list[dict]],
) -> None:
    make_deployment(cooldown="0s", max_concurrent=5)
    kubectl("create", "secret", "generic", "webhook", "-n", namespace,
            "--from-literal=bearer=first-token")
    config = ReceiverConfig(port=free_port(), host="127.0.0.1", secret_name="webhook",
                            secret_namespace=namespace, secret_key="bearer",
                            namespaces=(namespace,))
    thread = ReceiverThread(config).start()
    try:
        assert post(thread.url, notification(alert(namespace)), token="wrong").status_code == 401
        ok = post(thread.url, notification(alert(namespace)), token="first-token")
        assert ok.status_code == 200 and ok.json()["results"][0]["action"] == "created"

        secret = {"data": {"bearer": "c2Vjb25kLXRva2Vu"}}  # base64("second-token")
        kubectl("patch", "secret", "webhook", "-n", namespace, "--type=merge",
                "-p", json.dumps(secret))
        second = notification(alert(namespace, starts="2026-11-30T06:00:00Z"))
        resp = poll("the rotated token to be accepted", lambda: (
            r := post(thread.url, second, token="second-token")).status_code == 200 and r,
            timeout=30, interval=1)
        assert resp.json()["results"][0]["action"] == "created"
        assert post(thread.url, second, token="first-token").status_code == 401
        assert len(trainingruns()) == 2

        kubectl("delete", "secret", "webhook", "-n", namespace)
        gone = poll("the deleted Secret to be noticed", lambda: (
            r := post(thread.url, second, token="other")).status_code == 503 and r,
            timeout=60, interval=1)
        assert "Secret" in gone.json()["error"]
    finally:
        thread.stop()
