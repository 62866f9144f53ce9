"""A client that disconnects in the middle of its body, over a real socket: neither the router
nor the model server answers it with a 4xx (it is gone) or counts it as a client error (that
would feed error-rate alerts); each counts it as a client disconnect, and the router sends
nothing upstream."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_localstack.cluster import poll

BODY = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                               "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()  # fmt: skip


def send_half_and_close(port: int, path: str, content_length: bool = True) -> None:
    """Headers promising the whole body, half of it, then close (a client going away)."""
    half = BODY[: len(BODY) // 2]
    if content_length:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(BODY))
        chunk = half
    else:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()
        chunk = b"%x\r\n%s\r\n" % (len(half), half)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + chunk)


class Upstream:
    """Counts the requests that reach it; answers 200."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        while (await receive()).get("more_body"):
            pass
        self.requests += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})


def metrics(port: int) -> dict[str, list]:
    """The samples of ``/metrics`` by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def count(port: int, name: str, **labels: str) -> float:
    return sum(s.value for s in metrics(port).get(name, []) if s.labels.items() >= labels.items())


def infer(port: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/iris/infer", data=BODY,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_router_counts_a_disconnect_mid_body_and_forwards_nothing(routed, serve_asgi) -> None:  # noqa: ANN001
    upstream = Upstream()
    port = routed(serve_asgi(upstream).port)
    send_half_and_close(port, "/v2/models/iris/infer")
    send_half_and_close(port, "/v2/models/iris/infer", content_length=False)
    poll("the router to count two disconnects",
         lambda: count(port, "mlops_router_client_disconnects_total") == 2,
         timeout=15, interval=0.05)  # fmt: skip
    assert "mlops_router_requests_total" not in metrics(port)  # no 400/413/499 anywhere
    assert upstream.requests == 0  # nothing was sent upstream
    assert infer(port) == 200  # and the next client is served
    assert upstream.requests == 1
    assert count(port, "mlops_router_requests_total", code="200") == 1


@pytest.mark.parametrize("path,endpoint", [("/v2/models/iris/infer", "infer"),
                                           ("/predict", "predict")])  # fmt: skip
def test_model_server_counts_a_disconnect_mid_body_not_as_an_error(
    start_server, iris_loaded, path: str, endpoint: str  # noqa: ANN001
) -> None:
    server = start_server(iris_loaded, model_name="iris")
    port = int(server.http.rsplit(":", 1)[1])
    send_half_and_close(port, path)
    poll("the model server to count the disconnect",
         lambda: count(port, "mlops_runtime_client_disconnects_total", endpoint=endpoint) == 1,
         timeout=15, interval=0.05)  # fmt: skip
    samples = metrics(port)
    assert "mlops_runtime_errors_total" not in samples
    assert "mlops_runtime_requests_total" not in samples
    assert infer(port) == 200
    assert count(port, "mlops_runtime_requests_total", code="200") == 1
