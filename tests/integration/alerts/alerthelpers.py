"""Helpers of the alert receiver tests: the receiver on a thread's event loop, payloads, posting."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx

from mlops_operator.alerts import ReceiverConfig, ReceiverHandle, start_receiver, stop_receiver

TOKEN = "test-token-9f3a"
TEMPLATE = {"model": "iris", "image": "ghcr.io/mlops-operator/mlops-runtime:0.1.0",
            "command": ["mlops-runtime", "train"], "args": ["--model", "iris"],
            "dataset": {"uri": "builtin://iris"}}


class ReceiverThread:
    """The receiver on its own event loop in a thread (as kopf's loop would run it)."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="receiver-loop",
                                       daemon=True)
        self.handle: ReceiverHandle | None = None

    def start(self) -> ReceiverThread:
        self.thread.start()
        self.handle = asyncio.run_coroutine_threadsafe(
            start_receiver(config=self.config), self.loop).result(30)
        assert self.handle is not None
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(stop_receiver(self.handle), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        assert self.handle is not None
        return self.handle.url


def alert(namespace: str, deployment: str = "iris", name: str = "ModelFeatureDrift",
          starts: str = "2026-11-30T05:00:00.000000001Z", fingerprint: str = "a1b2c3d4e5f60718",
          status: str = "firing", **labels: str) -> dict[str, Any]:
    """One alert as Alertmanager sends it."""
    return {"status": status,
            "labels": {"alertname": name, "namespace": namespace, "modeldeployment": deployment,
                       "model": "iris", "variant": "champion", **labels},
            "annotations": {"summary": "feature drift"},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "mlops-operator",
            "groupKey": "{}:{}", "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager", "alerts": list(alerts)}


def post(url: str, body: Any, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=data, headers={**headers, "Content-Type": "application/json"},
                      timeout=30, **kw)
