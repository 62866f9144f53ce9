"""The model server's infer requests answered in uvicorn's protocol (``infer_protocol.py``), over
real sockets: the same answers as the ASGI path, byte for byte; keep-alive, HTTP/1.0,
pipelining, ``Expect: 100-continue``, oversize bodies and clients that leave all behave as
uvicorn's own request cycle does."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import numpy as np
import pytest

from mlops_localstack.cluster import poll
from mlops_runtime import fastpath
from mlops_runtime import server as server_module
from mlops_runtime.infer_protocol import InferProtocol

LIMIT = 4096
INFER = "/v2/models/iris/infer"


def body_of(data: list[Any], datatype: str = "FP32", **extra: Any) -> bytes:
    shape = [len(data) // 4, 4] if len(data) != 4 else [1, 4]
    return json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                   "data": data}], **extra}).encode()  # fmt: skip


GOOD = body_of([5.1, 3.5, 1.4, 0.2])


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    """One client connection that reads whole responses (status, headers, body) in order."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""

    def send(self, data: bytes) -> Conn:
        self.sock.sendall(data)
        return self

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed before a response; got {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill(), "connection closed inside a response body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (after what was read)."""
        return not self.buf and not self._fill()

    def close(self) -> None:
        self.sock.close()


def port_of(server: Any) -> int:
    return int(server.http.rsplit(":", 1)[1])


@pytest.fixture
def servers(start_server, iris_loaded, monkeypatch):  # noqa: ANN001, ANN201
    """(the server answering infer in its protocol, the same server on the ASGI path)."""
    ours = start_server(iris_loaded, model_name="iris", max_request_bytes=LIMIT)
    monkeypatch.setattr(server_module, "_infer_protocol", lambda plane, limit: None)
    asgi = start_server(iris_loaded, model_name="iris", max_request_bytes=LIMIT)
    monkeypatch.undo()
    assert issubclass(ours.server.http.config.http_protocol_class, InferProtocol)
    assert not issubclass(asgi.server.http.config.http_protocol_class, InferProtocol)
    return ours, asgi


def binary_request() -> bytes:
    raw = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "predict_proba",
                                    "parameters": {"binary_data": True}},
                                   {"name": "predict"}]}).encode()  # fmt: skip
    return post(INFER, head + raw, f"Inference-Header-Content-Length: {len(head)}")


CASES = {
    "one row": post(INFER, GOOD),
    "id and two outputs": post(INFER, json.dumps({
        "id": "r-1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64",
                                 "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}],
        "outputs": [{"name": "predict_proba"}, {"name": "predict"}]}).encode()),  # fmt: skip
    "binary in and out": binary_request(),
    "chunked body": (b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (GOOD[:20], GOOD[20:]))
                     + b"0\r\n\r\n"),  # fmt: skip
    "versioned path, model without one": post("/v2/models/iris/versions/1/infer", GOOD),
    "malformed JSON": post(INFER, b'{"inputs": ['),
    "unknown model": post("/v2/models/other/infer", GOOD),
    "unknown version": post("/v2/models/iris/versions/9/infer", GOOD),
    "wrong width": post(INFER, body_of([1.0, 2.0, 3.0], datatype="FP32")),
    "FP32 overflow": post(INFER, body_of([1e39, 1.0, 1.0, 1.0])),
    "unknown output": post(INFER, json.dumps({"inputs": json.loads(GOOD)["inputs"],
                                              "outputs": [{"name": "nope"}]}).encode()),
    "announced oversize": post(INFER, b"x" * (LIMIT + 1)),
    "bad Content-Length": (b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 12abc\r\n\r\n"),
    "bad header length": post(INFER, GOOD, "Inference-Header-Content-Length: many"),
}


#: what each case is answered with (on both paths)
STATUS = {"one row": 200, "id and two outputs": 200, "binary in and out": 200,
          "chunked body": 200, "versioned path, model without one": 404, "malformed JSON": 400,
          "unknown model": 404, "unknown version": 404, "wrong width": 400,
          "FP32 overflow": 400, "unknown output": 400, "announced oversize": 413,
          "bad Content-Length": 400, "bad header length": 400}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_answers_are_those_of_the_asgi_path_byte_for_byte(servers, case: str) -> None:  # noqa: ANN001
    answers = []
    for server in servers:
        conn = Conn(port_of(server)).send(CASES[case])
        status, headers, body = conn.response()
        conn.close()
        headers.pop("date")
        answers.append((status, headers, body))
    assert answers[0] == answers[1]
    assert answers[0][0] == STATUS[case]


def test_infer_requests_never_reach_the_asgi_app(servers, monkeypatch) -> None:  # noqa: ANN001
    ours, asgi = servers

    async def refuse(*_: Any) -> bytes:
        raise AssertionError("the ASGI infer path ran")

    monkeypatch.setattr(fastpath, "read_body", refuse)
    for server, expected in ((ours, 200), (asgi, 500)):
        conn = Conn(port_of(server)).send(post(INFER, GOOD))
        assert conn.response()[0] == expected
        conn.close()


def test_keep_alive_many_requests_on_one_connection(servers) -> None:  # noqa: ANN001
    conn = Conn(port_of(servers[0]))
    for i in range(200):
        flower = [5.1, 3.5, 1.4, 0.2] if i % 2 == 0 else [6.7, 3.0, 5.2, 2.3]
        status, headers, body = conn.send(post(INFER, body_of(flower))).response()
        assert status == 200 and "connection" not in headers
        assert json.loads(body)["outputs"][0]["data"] == [0 if i % 2 == 0 else 2]
    conn.close()


def test_http_1_0_is_answered_and_closed(servers) -> None:  # noqa: ANN001
    conn = Conn(port_of(servers[0])).send(post(INFER, GOOD, version="1.0"))
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert conn.closed()


def test_pipelined_requests_are_answered_in_order(servers) -> None:  # noqa: ANN001
    """Three requests in one write: infer, a health check (ASGI), infer of another flower."""
    other = body_of([6.7, 3.0, 5.2, 2.3])
    health = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    conn = Conn(port_of(servers[0])).send(post(INFER, GOOD) + health + post(INFER, other))
    first, second, third = conn.response(), conn.response(), conn.response()
    assert json.loads(first[2])["outputs"][0]["data"] == [0]
    assert second[0] == 200 and b"outputs" not in second[2]
    assert json.loads(third[2])["outputs"][0]["data"] == [2]
    conn.close()


def test_expect_100_continue_is_honoured(servers) -> None:  # noqa: ANN001
    conn = Conn(port_of(servers[0]))
    head = post(INFER, b"", "Expect: 100-continue").replace(b"Content-Length: 0",
                                                            f"Content-Length: {len(GOOD)}".encode())
    conn.send(head)
    while b"\r\n\r\n" not in conn.buf:
        assert conn._fill()
    assert conn.buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.buf = conn.buf[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
    status, _, body = conn.send(GOOD).response()
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [0]
    conn.close()


def test_a_streamed_body_over_the_limit_is_refused_and_the_connection_goes_on(servers) -> None:  # noqa: ANN001
    chunk = b"y" * 1024
    head = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    conn = Conn(port_of(servers[0])).send(head + chunks)
    status, _, body = conn.response()
    assert status == 413 and b"4096" in body
    assert conn.send(post(INFER, GOOD)).response()[0] == 200  # the rest was dropped, not parsed
    conn.close()


def test_a_client_that_leaves_before_its_answer_does_not_disturb_others(servers) -> None:  # noqa: ANN001
    port = port_of(servers[0])
    for _ in range(20):  # whole requests, then gone at once: the answers go nowhere
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(post(INFER, GOOD))
        sock.close()
    conn = Conn(port)
    assert conn.send(post(INFER, GOOD)).response()[0] == 200
    conn.close()

    def counted() -> bool:
        text = Conn(port).send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").response()[2]
        line = next((ln for ln in text.decode().splitlines()
                     if ln.startswith("mlops_runtime_requests_total") and 'code="200"' in ln
                     and 'endpoint="infer"' in ln), "")  # fmt: skip
        return line.endswith(" 21.0")

    poll("all 21 infer requests counted", counted, timeout=15, interval=0.05)


def test_shutdown_answers_an_in_flight_infer_request_then_closes(start_server, held_echo,  # noqa: ANN001
                                                                  refuses) -> None:  # noqa: ANN001
    """SIGTERM while a request is being predicted: it is answered (``connection: close``),
    then the server stops; no new connection is taken meanwhile."""
    model, release = held_echo
    server = start_server(model, inline_predict_max_rows=0, graceful_shutdown_s=10.0,
                          grpc_port=0)  # fmt: skip
    assert issubclass(server.server.http.config.http_protocol_class, InferProtocol)
    port = port_of(server)
    conn = Conn(port).send(post("/v2/models/echo/infer", json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                     "data": [1.0, 2.0]}]}).encode()))  # fmt: skip
    poll("the request to be in flight", lambda: server.plane.batcher.in_flight == 1,
         timeout=10, interval=0.01)  # fmt: skip
    server.server.exit()  # like SIGTERM
    poll("the listener to close", lambda: refuses(port), timeout=10, interval=0.01)
    assert server.thread.is_alive()  # still draining the request
    release.set()
    status, headers, body = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert json.loads(body)["outputs"][0]["data"] == [1.0, 2.0]
    assert conn.closed()
    server.thread.join(15)
    assert not server.thread.is_alive()
