"""The node's gRPC probe against real gRPC servers: SERVING passes; NOT_SERVING, an unknown
service, a server without grpc.health.v1, a hung health call and no server at all fail."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mlops_localstack.node.runtime import ProbeState, run_probe

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    def __init__(self, with_health: bool = True) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.health = health.HealthServicer() if with_health else None
        if self.health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def set(self, service: str, status: Any) -> None:
        assert self.health is not None
        self.health.set(service, status)

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def probe(port: Any, service: str | None = None, timeout: float = 2,
          ports: dict[str, int] | None = None) -> tuple[bool, str]:
    spec: dict[str, Any] = {"port": port}
    if service is not None:
        spec["service"] = service
    return run_probe({"grpc": spec, "timeoutSeconds": timeout}, pod_ip="127.0.0.1",
                     ports=ports or {}, env={}, cwd=".")


def test_serving_passes_and_not_serving_fails(server: Server) -> None:
    server.set("", SERVING)
    assert probe(server.port) == (True, "")
    server.set("", NOT_SERVING)
    ok, msg = probe(server.port)
    assert not ok and msg == "service unhealthy (responded with 'NOT_SERVING')"
    server.set("", SERVING)
    assert probe(server.port)[0]


def test_the_probes_service_is_the_one_checked(server: Server) -> None:
    server.set("", SERVING)
    server.set("inference.GRPCInferenceService", NOT_SERVING)
    ok, msg = probe(server.port, service="inference.GRPCInferenceService")
    assert not ok and "NOT_SERVING" in msg
    server.set("inference.GRPCInferenceService", SERVING)
    assert probe(server.port, service="inference.GRPCInferenceService") == (True, "")
    ok, msg = probe(server.port, service="unknown.Service")  # the servicer says NOT_FOUND
    assert not ok and msg.startswith("error: health rpc probe failed: NOT_FOUND"), msg


def test_a_server_without_the_health_service_fails() -> None:
    s = Server(with_health=False)
    try:
        ok, msg = probe(s.port)
    finally:
        s.stop()
    assert not ok and "does not implement the grpc health protocol" in msg, msg


def test_nothing_listening_fails_within_the_timeout() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, msg = probe(port, timeout=0.5)
    assert not ok and msg.startswith("timeout: failed to connect service '127.0.0.1:"), msg


def test_a_health_call_that_never_answers_times_out() -> None:
    release = threading.Event()

    class Hung(health_pb2_grpc.HealthServicer):
        def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
            release.wait(10)
            return health_pb2.HealthCheckResponse(status=SERVING)

    s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(Hung(), s)
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    try:
        ok, msg = probe(port, timeout=0.3)
    finally:
        release.set()
        s.stop(grace=None).wait()
    assert not ok and msg == "timeout: health rpc did not complete within 0.3s", msg


def test_a_server_that_went_away_fails(server: Server) -> None:
    server.set("", SERVING)
    assert probe(server.port)[0]
    server.stop()
    ok, msg = probe(server.port, timeout=0.5)
    assert not ok and msg.startswith("timeout: failed to connect"), msg


def test_named_ports_resolve_and_a_missing_port_fails_clearly(server: Server) -> None:
    server.set("", SERVING)
    assert probe("grpc", ports={"grpc": server.port}) == (True, "")
    ok, msg = probe("nope", ports={"grpc": server.port})
    assert not ok and "is not a container port name" in msg


def test_readiness_follows_the_grpc_status(server: Server) -> None:
    spec = {"grpc": {"port": server.port}, "periodSeconds": 1, "failureThreshold": 2}
    state = ProbeState("readiness", spec, container_started=0.0)
    server.set("", SERVING)
    ok, msg = probe(server.port)
    assert state.record(ok, 1.0, msg) and state.result
    server.set("", NOT_SERVING)
    for t in (2.0, 3.0):
        ok, msg = probe(server.port)
        state.record(ok, t, msg)
    assert not state.result and "NOT_SERVING" in state.last_message
