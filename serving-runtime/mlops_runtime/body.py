"""The one request-body reader of the model server and the router (plain ASGI, no framework).

It refuses a body over ``limit`` bytes — from its ``Content-Length`` before reading anything when
the header is there, else while streaming — and raises the domain errors of
:mod:`mlops_runtime.errors`, which each transport maps to HTTP with :func:`errors.error_body`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from mlops_runtime.errors import ClientDisconnected, InvalidRequest, PayloadTooLarge

Receive = Callable[[], Awaitable[dict[str, Any]]]


def check_length(headers: Iterable[tuple[bytes, bytes]], limit: int) -> None:
    """Refuse a body by its ``Content-Length`` before reading it: :class:`InvalidRequest` (400)
    when malformed, :class:`PayloadTooLarge` (413) above ``limit`` bytes."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                raise InvalidRequest("invalid Content-Length")
            if int(value) > limit:
                raise PayloadTooLarge(limit)
            return


async def read_body(headers: Iterable[tuple[bytes, bytes]], receive: Receive, limit: int) -> bytes:
    """The whole body of an ASGI HTTP request.

    Raises :class:`PayloadTooLarge` (413) above ``limit`` bytes, :class:`InvalidRequest` (400)
    on a malformed ``Content-Length`` and :class:`ClientDisconnected` (499) when the client
    disconnects mid-body.
    """
    check_length(headers, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
