"""The one request-body reader of the model server and the router."""

from __future__ import annotations

import pytest

from mlops_runtime.body import read_body
from mlops_runtime.errors import ClientDisconnected, InvalidRequest, PayloadTooLarge, error_body


def receiver(*messages: dict):  # noqa: ANN201
    """An ASGI ``receive`` replaying ``messages``; records how many were consumed."""
    queue = list(messages)
    consumed: list[dict] = []

    async def receive() -> dict:
        consumed.append(queue.pop(0))
        return consumed[-1]

    receive.consumed = consumed  # type: ignore[attr-defined]
    return receive


def chunk(data: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": data, "more_body": more}


async def test_chunks_are_joined_up_to_the_limit() -> None:
    receive = receiver(chunk(b"ab", True), chunk(b"", True), chunk(b"cd"))
    assert await read_body([], receive, limit=4) == b"abcd"
    assert await read_body([], receiver(chunk(b"x")), limit=1) == b"x"
    assert await read_body([], receiver({"type": "http.request"}), limit=1) == b""


async def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    receive = receiver(chunk(b"x" * 11))
    with pytest.raises(PayloadTooLarge) as err:
        await read_body([(b"content-length", b"11")], receive, limit=10)
    assert receive.consumed == []
    assert error_body(err.value) == (413, b'{"error":"payload exceeds the limit of 10 bytes"}')


async def test_streamed_body_over_the_limit_without_content_length() -> None:
    receive = receiver(chunk(b"x" * 6, True), chunk(b"x" * 5, True), chunk(b"never"))
    with pytest.raises(PayloadTooLarge):
        await read_body([(b"host", b"h")], receive, limit=10)
    assert len(receive.consumed) == 2  # stops at the chunk that crosses the limit


@pytest.mark.parametrize("value", [b"-1", b"ten", b""])
async def test_a_malformed_content_length_is_400(value: bytes) -> None:
    with pytest.raises(InvalidRequest, match="Content-Length") as err:
        await read_body([(b"content-length", value)], receiver(chunk(b"")), limit=10)
    assert error_body(err.value)[0] == 400


async def test_a_client_disconnecting_mid_body_is_a_disconnect_not_a_400() -> None:
    receive = receiver(chunk(b"ab", True), {"type": "http.disconnect"})
    with pytest.raises(ClientDisconnected, match="disconnected") as err:
        await read_body([], receive, limit=10)
    assert error_body(err.value)[0] == 499
