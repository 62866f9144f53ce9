"""Keep-alive of the model server and the router: configurable, and longer than uvicorn's 5 s
by default (a client reusing a connection as the server closes it gets a reset)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from mlops_runtime.router.app import Router
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.settings import RuntimeSettings


def test_defaults_outlast_the_routers_reuse() -> None:
    runtime, router = RuntimeSettings(), RouterSettings()
    assert runtime.keep_alive_s == router.keep_alive_s == 75.0
    assert router.upstream_idle_s < runtime.keep_alive_s  # the router never reuses a closing one
    assert Router(router).pool.idle_s == router.upstream_idle_s


def test_keep_alive_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_RUNTIME_KEEP_ALIVE_S", "620")
    monkeypatch.setenv("MLOPS_ROUTER_KEEP_ALIVE_S", "700")
    monkeypatch.setenv("MLOPS_ROUTER_UPSTREAM_IDLE_S", "30")
    assert RuntimeSettings().keep_alive_s == 620
    assert (RouterSettings().keep_alive_s, RouterSettings().upstream_idle_s) == (700, 30)
    monkeypatch.setenv("MLOPS_RUNTIME_KEEP_ALIVE_S", "0")
    with pytest.raises(ValueError, match="keep_alive_s"):
        RuntimeSettings()


def test_the_model_server_closes_an_idle_connection_after_keep_alive_s(
    start_server: Any, make_echo: Any,
) -> None:
    """A real server with a short keep-alive closes an idle connection (EOF), and its uvicorn
    config carries the setting (uvicorn's own default is 5 s)."""
    server = start_server(make_echo(), keep_alive_s=0.3)
    assert server.server.http.config.timeout_keep_alive == 0.3
    host, port = server.http.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        sock.settimeout(10)  # far longer than the keep-alive: EOF must come before
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
        assert b"HTTP/1.1" not in rest  # nothing more was answered; the server closed it

