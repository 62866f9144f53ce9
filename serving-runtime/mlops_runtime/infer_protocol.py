"""uvicorn's httptools protocol, answering ``POST .../infer`` without an ASGI request cycle.

Under uvicorn every request otherwise costs a scope dict, a ``RequestResponseCycle``, an asyncio
task running the app, ``receive``/``send`` coroutines and their message dicts: most of what the
transport floor of ``bench/serving`` pays per request, and what ours paid on top of its codec
and model. This protocol keeps uvicorn's connection handling (parsing, keep-alive and its
timeout, flow control, pipelining, graceful shutdown) and, for an infer request, decodes the
body when its last byte has arrived, hands the rows to the micro-batcher, and writes the response
from the prediction's done-callback.

The answers are those of :class:`mlops_runtime.fastpath.InferFastPath` (the same data plane
calls, status codes, headers and bytes; tests compare them). That ASGI layer still answers
whatever this protocol hands on: any other request, a request pipelined behind one in flight,
``Expect: 100-continue``, a connection whose writes are paused, a percent-encoded path, and
servers with an access log, a root path or a concurrency limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlops_runtime.body import check_length
from mlops_runtime.codec import header_length
from mlops_runtime.dataplane import DataPlane
from mlops_runtime.errors import PayloadTooLarge, RuntimeServingError, error_body
from mlops_runtime.fastpath import INTERNAL_ERROR, infer_target, response_headers
from mlops_runtime.metrics import DISCONNECTED

log = logging.getLogger(__name__)

#: the headers of a plain JSON answer (what ``response_headers`` gives), formatted once
_JSON_LENGTH = b"content-type: application/json\r\ncontent-length: %d\r\n"
#: request targets (URL bytes) already looked at -> ``(model, version)`` or ``None``; clients
#: use a handful, and the cache stops growing at :data:`MAX_TARGETS`
_TARGETS: dict[bytes, tuple[str, str | None] | None] = {}
MAX_TARGETS = 1024
_UNKNOWN = object()


class _NoEvent:
    """uvicorn's ``connection_lost`` sets the cycle's ``message_event``; nothing waits on it."""

    __slots__ = ()

    def set(self) -> None:
        return None


class InferCycle:
    """One infer request answered by :class:`InferProtocol`: what uvicorn's protocol reads of the
    request in flight (``response_complete``, ``keep_alive``, ``disconnected``,
    ``message_event``), and the request's own state."""

    __slots__ = ("target", "headers", "chunks", "size", "keep_alive", "response_complete",
                 "disconnected", "started", "submitted")  # fmt: skip
    message_event = _NoEvent()

    def __init__(self, target: tuple[str, str | None], headers: list[tuple[bytes, bytes]],
                 keep_alive: bool) -> None:  # fmt: skip
        self.target = target
        self.headers = headers
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.started = time.perf_counter()
        self.submitted = False


class InferProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with infer requests answered in the protocol (see the module
    docstring); :func:`protocol_for` binds it to a data plane."""

    plane: DataPlane
    limit: int
    #: ``(uvicorn's default headers list, its bytes)``: the list changes once a second (date)
    _defaults: tuple[Any, bytes] = (None, b"")

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        """What uvicorn resets for a new request, without its ASGI scope: that is built in
        :meth:`on_headers_complete`, and only for a request handed on to the ASGI app."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        target = self._infer_target()
        if target is None:
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()  # uvicorn's scope for this request (it resets the rest)
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        cycle = self.cycle = InferCycle(target, self.headers, keep_alive)  # type: ignore[assignment]
        try:  # refuse an announced oversize body before reading it
            check_length(self.headers, self.limit)
        except RuntimeServingError as exc:
            self._respond_error(cycle, exc)

    def _infer_target(self) -> tuple[str, str | None] | None:
        """The model and version of a request this protocol answers itself, else ``None``."""
        cycle = self.cycle
        if (
            self.parser.get_method() != b"POST"
            or (cycle is not None and not cycle.response_complete)  # pipelined: keep the order
            or self.expect_100_continue
            or self.flow.write_paused
            or self.config.access_log  # (uvicorn logs each request of its cycle)
            or self.root_path
            or self.limit_concurrency is not None
            or self.parser.should_upgrade()
        ):
            return None
        url = self.url
        target = _TARGETS.get(url, _UNKNOWN)
        if target is _UNKNOWN:
            path = httptools.parse_url(url).path
            target = None
            if b"%" not in path and path.isascii():
                target = infer_target(path.decode("ascii"))
            if len(_TARGETS) < MAX_TARGETS:
                _TARGETS[url] = target
        return target  # type: ignore[return-value]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is not InferCycle:
            super().on_body(body)
            return
        if cycle.response_complete:  # answered early (413): the rest of the body is dropped
            return
        cycle.size += len(body)
        if cycle.size > self.limit:
            self._respond_error(cycle, PayloadTooLarge(self.limit))
            return
        cycle.chunks.append(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is not InferCycle:
            super().on_message_complete()
            return
        if not cycle.response_complete:
            self._infer(cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if type(cycle) is InferCycle and not cycle.submitted and not cycle.response_complete:
            # the client left mid-body: a disconnect, not a request (as the ASGI path counts it)
            cycle.response_complete = True
            self.plane.metrics.observe_request("infer", DISCONNECTED,
                                               time.perf_counter() - cycle.started)  # fmt: skip
        super().connection_lost(exc)

    # -- answering ---------------------------------------------------------------------------
    def _infer(self, cycle: InferCycle) -> None:
        plane = self.plane
        chunks = cycle.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cycle.chunks = []
        cycle.submitted = True
        plane.batcher.enter()
        try:
            model, request = plane.decode(cycle.target[0], cycle.target[1], body,
                                          header_length(cycle.headers))  # fmt: skip
        except RuntimeServingError as exc:
            plane.batcher.leave()
            self._respond_error(cycle, exc)
            return
        except Exception:  # a bug, not the client's mistake: still an OIP error body
            plane.batcher.leave()
            log.exception("inference failed")
            self._respond(cycle, 500, INTERNAL_ERROR, None)
            return

        def answer(results: list[Any] | None, error: RuntimeServingError | None) -> None:
            plane.batcher.leave()
            if error is not None:
                self._respond_error(cycle, error)
                return
            try:
                payload, json_length = plane.encode(model, request, results)  # type: ignore[arg-type]
            except RuntimeServingError as exc:
                self._respond_error(cycle, exc)
                return
            except Exception:  # a bug, not the client's mistake
                log.exception("inference failed")
                self._respond(cycle, 500, INTERNAL_ERROR, None)
                return
            self._respond(cycle, 200, payload, json_length)

        plane.submit(request, answer)

    def _respond_error(self, cycle: InferCycle, exc: RuntimeServingError) -> None:
        status, payload = error_body(exc)
        self._respond(cycle, status, payload, None)

    def _respond(self, cycle: InferCycle, status: int, payload: bytes,
                 json_length: int | None) -> None:  # fmt: skip
        """Write the whole response at once (uvicorn's default headers first, as its ``send``
        does), then let uvicorn go on: keep-alive timer, pipelined requests, resumed reads."""
        cycle.response_complete = True
        self.plane.metrics.observe_request("infer", status, time.perf_counter() - cycle.started)
        if cycle.disconnected or self.transport.is_closing():
            return
        defaults = self.server_state.default_headers
        cached = InferProtocol._defaults
        if cached[0] is not defaults:
            cached = InferProtocol._defaults = (
                defaults, b"".join(b"%s: %s\r\n" % (n, v) for n, v in defaults))
        if json_length is None:
            parts = [STATUS_LINE[status], cached[1], _JSON_LENGTH % len(payload)]
        else:
            parts = [STATUS_LINE[status], cached[1]]
            for name, value in response_headers(len(payload), json_length):
                parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", payload)
        self.transport.write(b"".join(parts))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def protocol_for(plane: DataPlane, limit: int) -> type[InferProtocol]:
    """An :class:`InferProtocol` class answering from ``plane``, refusing bodies over ``limit``
    bytes (uvicorn takes a protocol class, and makes one instance per connection)."""
    return type("InferProtocol", (InferProtocol,), {"plane": plane, "limit": limit})
