"""The router's keep-alive client against a real loopback server, on uvloop like the router."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from mlops_runtime.router.upstream import UpstreamError, UpstreamPool, UpstreamUnreached

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Answer(asyncio.Protocol):
    """Answers every request with RESPONSE and keeps the connection alive."""

    def __init__(self, accepted: list[asyncio.Transport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.accepted.append(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:  # one small request per read
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def run(scenario: Callable[[int, list[asyncio.Transport]], Awaitable[None]]) -> None:
    async def main() -> None:
        accepted: list[asyncio.Transport] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Answer(accepted), "127.0.0.1", 0)
        try:
            await scenario(server.sockets[0].getsockname()[1], accepted)
        finally:
            server.close()

    uvloop.run(main())


def test_an_idle_connection_closing_before_its_loss_was_delivered_is_replaced() -> None:
    """A pooled connection whose transport is closing (a reset read, ``connection_lost`` not yet
    called back) looks alive; the request is sent again over a fresh connection."""

    async def scenario(port: int, accepted: list[asyncio.Transport]) -> None:
        pool = UpstreamPool(timeout_s=5)
        first = await pool.request("127.0.0.1", port, "POST", "/x", [], b"{}")
        assert first.status == 200 and first.body == b"ok"
        (conn,) = pool._idle[("127.0.0.1", port)]
        assert conn.transport is not None
        conn.transport.abort()  # connection_lost comes later, in a callback
        assert not conn.closed
        second = await pool.request("127.0.0.1", port, "POST", "/x", [], b"{}")
        assert second.status == 200 and second.body == b"ok"
        assert len(accepted) == 2  # answered over a new connection
        await pool.close()

    run(scenario)


@pytest.mark.parametrize("delivered", [False, True], ids=["loss-pending", "loss-delivered"])
def test_a_connection_lost_before_the_request_is_written_is_unreached_not_a_crash(
    delivered: bool,
) -> None:
    """Regression (CI of 302c8af): a fresh connection lost between connect and write (a pod
    SIGKILLed at that moment) had its closed transport written to; uvloop's RuntimeError became an
    HTTP 500 from the router. Nothing was sent, so it is UpstreamUnreached: the router ejects the
    endpoint and tries another."""

    async def scenario(port: int, accepted: list[asyncio.Transport]) -> None:
        pool = UpstreamPool(timeout_s=5)
        connect = pool._connect

        async def connect_then_lose(host: str, p: int):  # noqa: ANN202
            conn = await connect(host, p)
            assert conn.transport is not None
            conn.transport.abort()
            while delivered and not conn.closed:
                await asyncio.sleep(0)  # let uvloop call connection_lost back
            return conn

        pool._connect = connect_then_lose  # type: ignore[method-assign]
        with pytest.raises(UpstreamUnreached):
            await pool.request("127.0.0.1", port, "POST", "/x", [], b"{}")
        await pool.close()

    run(scenario)


def test_a_used_connection_lost_before_the_write_says_nothing_came_back() -> None:
    """send() on a connection that already answered once and is now lost raises UpstreamError
    with ``received_any`` False: the pool's retry (reused) or unreached (fresh) decision reads
    it, so a stale flag from the previous answer would make this a 502."""

    async def scenario(port: int, accepted: list[asyncio.Transport]) -> None:
        pool = UpstreamPool(timeout_s=5)
        await pool.request("127.0.0.1", port, "POST", "/x", [], b"{}")
        (conn,) = pool._idle[("127.0.0.1", port)]
        assert conn.received_any and conn.transport is not None
        conn.transport.abort()
        while not conn.closed:
            await asyncio.sleep(0)
        with pytest.raises(UpstreamError, match="before the request was sent"):
            conn.send(b"POST /x HTTP/1.1\r\n\r\n", b"")
        assert not conn.received_any
        await pool.close()

    run(scenario)


@pytest.mark.parametrize(("idle_s", "connections"), [(3600.0, 1), (0.0, 3)],
                         ids=["reused", "idle-too-long"])  # fmt: skip
def test_a_connection_idle_longer_than_idle_s_is_not_reused(idle_s: float, connections: int) -> None:
    """The pool closes connections idle for ``idle_s`` (60 s in the router) rather than reusing
    them: below the model server's keep-alive, it never writes into a connection the server is
    closing (a reset: the request lost)."""

    async def scenario(port: int, accepted: list[asyncio.Transport]) -> None:
        pool = UpstreamPool(timeout_s=5, idle_s=idle_s)
        for _ in range(3):
            response = await pool.request("127.0.0.1", port, "POST", "/x", [], b"{}")
            assert response.status == 200
        assert len(accepted) == connections
        await pool.close()

    run(scenario)
