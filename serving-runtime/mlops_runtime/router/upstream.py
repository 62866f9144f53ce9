"""A small keep-alive HTTP/1.1 client for forwarding requests to model servers.

It is built on asyncio protocols and httptools (already required by uvicorn[standard]) because a
general-purpose client costs several times more per request, and the router's budget is one
millisecond. Only what forwarding needs: one request per connection at a time, Content-Length
bodies out, Content-Length or chunked bodies in.

Why not httpx or aiohttp — ``bench/router/clients.py`` sends the same V2 infer request to the
same upstream (uvicorn + httptools) with each client, side by side in one run, on uvloop like the
router (2026-11-30, 2 CPUs shared with other jobs, load average 12, 1500 sequential + 3000
concurrent requests per round, best of 4; httpx 0.28.1, aiohttp 3.14.5):

=================  ==========  ==========  ===============  ======================
client              p50 (µs)    p99 (µs)    req/s at c=16     vs this client
=================  ==========  ==========  ===============  ======================
this client                95         169            17050   1.00x
aiohttp                   213        3283             5070   p50 +118 µs, 0.30x req/s
httpx + sniffio          1111        9335              393   p50 +1016 µs, 0.02x req/s
httpx as installed       1557       10568              331   p50 +1462 µs, 0.02x req/s
=================  ==========  ==========  ===============  ======================

httpx alone would spend the whole 1 ms budget (it also re-imports the absent ``sniffio`` on every
request); aiohttp, the closest, adds ~0.12 ms per request, cuts the router's throughput to a
third and is not a runtime dependency. That margin is worth these ~150 lines. The router's
end-to-end overhead (``bench/router/overhead.py``, p50 through the router minus p50 direct)
measured +0.19 ms with this client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

import httptools

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"host"}
)  # fmt: skip


class UpstreamError(Exception):
    """The upstream could not be reached or returned a broken response."""


class UpstreamUnreached(UpstreamError):
    """Not a byte came back: the connection was refused or reset before any answer (a pod that
    is going away). The router may send the request to another endpoint of the variant."""


@dataclass(slots=True)
class UpstreamResponse:
    """Status, end-to-end headers and body of an upstream response."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received_any = False
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._status = 0
        self.keep_alive = True
        self.idle_since = 0.0  # monotonic time it went back to the pool

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if self._parser is None:
            self._fail(UpstreamError("unexpected data from upstream"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"bad response from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamError(f"upstream closed the connection: {exc or 'EOF'}"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter, self._parser = self._waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_result(UpstreamResponse(self._status, self._headers, b"".join(self._body)))

    def send(self, head: bytes, body: bytes) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._headers, self._body, self.received_any = [], [], False
        if self.closed or self.transport.is_closing():
            # lost between connect (or reuse) and now, e.g. a pod killed at that moment: nothing
            # was sent (received_any is False), so the request may go elsewhere (uvloop would
            # raise RuntimeError)
            raise UpstreamError("upstream closed the connection before the request was sent")
        self._waiter = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self._waiter


class UpstreamPool:
    """Keep-alive connections to ``host:port`` endpoints, reused across requests."""

    def __init__(self, timeout_s: float = 30.0, max_idle_per_endpoint: int = 256,
                 idle_s: float = 60.0) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self.max_idle = max_idle_per_endpoint
        #: a connection idle this long is closed instead of reused: below the servers' keep-alive
        #: (75 s for mlops-runtime), so a request never races the server closing it
        self.idle_s = idle_s
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnreached(f"cannot connect to {host}:{port}: {exc}") from None
        return conn

    async def request(
        self, host: str, port: int, method: str, target: str,
        headers: list[tuple[bytes, bytes]], body: bytes,
    ) -> UpstreamResponse:  # fmt: skip
        """Send one request; retries once on a fresh connection if a reused one was stale."""
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()]
        for name, value in headers:
            if name not in HOP_BY_HOP:
                lines.append(name + b": " + value + b"\r\n")
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        head = b"".join(lines)
        idle = self._idle.setdefault((host, port), deque())
        for attempt in range(2):
            conn = None
            fresh_after = time.monotonic() - self.idle_s
            while idle and conn is None:
                candidate = idle.pop()
                transport = candidate.transport
                if candidate.closed or transport is None or transport.is_closing():
                    continue
                if candidate.idle_since <= fresh_after:
                    # the most recently idle one is too old: so is every one below it
                    for stale in (candidate, *idle):
                        if stale.transport is not None:
                            stale.transport.close()
                    idle.clear()
                    break
                conn = candidate
            reused = conn is not None
            if conn is None:
                conn = await self._connect(host, port)
            try:
                response = await asyncio.wait_for(conn.send(head, body), self.timeout_s)
            except TimeoutError:
                conn._fail(UpstreamError("timeout"))
                raise UpstreamError(f"{host}:{port} did not answer in {self.timeout_s}s") from None
            except UpstreamError as exc:
                if reused and not conn.received_any and attempt == 0:
                    continue  # the server closed an idle connection as we reused it
                if not conn.received_any and not isinstance(exc, UpstreamUnreached):
                    raise UpstreamUnreached(str(exc)) from exc
                raise
            if conn.keep_alive and not conn.closed and len(idle) < self.max_idle:
                conn.idle_since = time.monotonic()
                idle.append(conn)
            elif conn.transport is not None:
                conn.transport.close()
            return response
        raise UpstreamError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            while idle:
                conn = idle.pop()
                if conn.transport is not None:
                    with contextlib.suppress(Exception):
                        conn.transport.close()
        self._idle.clear()
