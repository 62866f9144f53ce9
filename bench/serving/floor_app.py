"""The transport floor: uvicorn + uvloop + httptools answering the V2 infer request with a fixed
V2 response, no model and no codec — what the HTTP stack alone costs per request.

It reads the whole request body (as a server must) and answers every ``POST .../infer`` with
fixed bytes: ``--response FILE``, which the harness fills with mlops-runtime's own answer to the
benchmark's one-row request, so both move the same bytes over the same stack. ``GET
/v2/health/ready`` answers 200 for the harness.

    python bench/serving/floor_app.py --port 8090 [--response body.json] [--no-asgi]

``--no-asgi`` answers from uvicorn's protocol instead (the floor of a server that skips the ASGI
cycle for infer requests, as mlops-runtime does since ``infer_protocol.py``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

#: Default answer: a V2 response to the benchmark's one-row request (class 0).
RESPONSE = json.dumps({
    "model_name": "iris", "model_version": "1", "id": "", "parameters": {},
    "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}],
}, separators=(",", ":")).encode()  # fmt: skip


def headers_for(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


HEADERS = headers_for(RESPONSE)
READY = (200, [(b"content-length", b"0")], b"")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        return
    more = True
    while more:  # the whole body, as any server must read it
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "POST" and scope["path"].endswith("/infer"):
        status, headers, body = 200, HEADERS, RESPONSE
    elif scope["path"] == "/v2/health/ready":
        status, headers, body = READY
    else:
        status, headers, body = 404, [(b"content-length", b"0")], b""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def no_asgi_protocol() -> type:
    """uvicorn's httptools protocol answering ``POST .../infer`` with the fixed bytes from its
    parser callbacks (``--no-asgi``): no ASGI scope, cycle, task or messages, as
    mlops-runtime's ``infer_protocol`` does; anything else goes to :func:`app`. Written here on
    its own (it does not import mlops-runtime), as the floor of a server built that way."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class FixedAnswer(HttpToolsProtocol):
        answering = False

        def on_headers_complete(self) -> None:
            self.answering = (self.parser.get_method() == b"POST"
                              and self.url.endswith(b"/infer")
                              and (self.cycle is None or self.cycle.response_complete))
            if not self.answering:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.answering:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self.answering:
                super().on_message_complete()
                return
            self.answering = False
            defaults = b"".join(b"%s: %s\r\n" % (n, v)
                                for n, v in self.server_state.default_headers)
            self.transport.write(b"".join([
                b"HTTP/1.1 200 OK\r\n", defaults,
                b"".join(b"%s: %s\r\n" % (n, v) for n, v in HEADERS), b"\r\n", RESPONSE]))
            self.on_response_complete()

    return FixedAnswer


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--response", help="file with the response body (default: a V2 answer)")
    ap.add_argument("--no-asgi", action="store_true",
                    help="answer infer requests from uvicorn's protocol, without an ASGI cycle")
    args = ap.parse_args()
    if args.response:
        global RESPONSE, HEADERS
        with open(args.response, "rb") as fh:
            RESPONSE = fh.read()
        HEADERS = headers_for(RESPONSE)
    http: Any = no_asgi_protocol() if args.no_asgi else "httptools"
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http=http,
                access_log=False, log_level="warning", lifespan="off")  # fmt: skip


if __name__ == "__main__":
    main()
