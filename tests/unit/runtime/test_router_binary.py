"""The router forwards binary tensor data requests and responses untouched (headers and body)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as thttp
import uvicorn

from mlops_localstack.cluster import poll
from mlops_runtime.router.app import Router
from mlops_runtime.router.settings import RouterSettings


class Threaded:
    """An ASGI app under uvicorn in a background thread, on an ephemeral loopback port."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan=lifespan))  # fmt: skip
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        poll("server to start", lambda: self.server.started, timeout=30, interval=0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class Recorder:
    """Records each request's headers and body; answers with a fixed binary-extension response."""

    RESPONSE = b'{"outputs":[]}' + bytes(range(256))

    def __init__(self) -> None:
        self.requests: list[tuple[list[tuple[bytes, bytes]], bytes]] = []

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((scope["headers"], body))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", b"14")]})  # fmt: skip
        await send({"type": "http.response.body", "body": self.RESPONSE})


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """Start a router to an upstream port; returns the router's port."""
    started: list[Threaded] = []

    def start(upstream_port: int) -> int:
        config = tmp_path / "router.json"
        config.write_text(
            json.dumps(
                {
                    "variants": [
                        {
                            "name": "only",
                            "weight": 1,
                            "endpoints": [f"http://127.0.0.1:{upstream_port}"],
                        }
                    ]
                }
            )
        )
        router = Router(RouterSettings(config=str(config), reload_interval_s=3600,
                                       discovery_interval_s=3600))  # fmt: skip
        server = Threaded(router, lifespan="on")
        started.append(server)
        return server.port

    yield start
    for server in started:
        server.stop()


def test_binary_request_and_response_pass_byte_for_byte(routed) -> None:  # noqa: ANN001
    recorder = Recorder()
    upstream = Threaded(recorder)
    try:
        port = routed(upstream.port)
        body = b'{"inputs":[]}' + bytes(range(256)) * 4
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/v2/models/iris/infer",
            body=body,
            headers={
                "Inference-Header-Content-Length": "13",
                "Content-Type": "application/octet-stream",
            },
        )
        response = conn.getresponse()
        payload = response.read()
        conn.close()
    finally:
        upstream.stop()
    [(headers, received)] = recorder.requests
    assert received == body
    assert (b"inference-header-content-length", b"13") in headers
    assert (b"content-type", b"application/octet-stream") in headers
    assert response.status == 200 and payload == Recorder.RESPONSE
    assert response.getheader("Inference-Header-Content-Length") == "14"
    assert response.getheader("x-mlops-variant") == "only"


def test_tritonclient_binary_through_the_router(routed, module_servers, iris) -> None:  # noqa: ANN001
    X, y, _ = iris
    port = routed(int(module_servers["iris"].http.rsplit(":", 1)[1]))
    client = thttp.InferenceServerClient(f"127.0.0.1:{port}")
    rows = X[[0, 60, 120]].astype(np.float32)
    item = thttp.InferInput("input-0", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows, binary_data=True)
    result = client.infer("iris", [item], outputs=[
        thttp.InferRequestedOutput("predict", binary_data=True),
        thttp.InferRequestedOutput("predict_proba", binary_data=True)])  # fmt: skip
    np.testing.assert_array_equal(result.as_numpy("predict"), y[[0, 60, 120]])
    assert result.as_numpy("predict_proba").shape == (3, 3)
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
