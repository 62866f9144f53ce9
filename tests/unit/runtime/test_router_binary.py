"""The router forwards binary tensor data requests and responses untouched (headers and body)."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import numpy as np
import tritonclient.http as thttp


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


def test_binary_request_and_response_pass_byte_for_byte(routed, serve_asgi) -> None:  # noqa: ANN001
    recorder = Recorder()
    upstream = serve_asgi(recorder)
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
