"""A lean ASGI layer answering ``POST /v2/models/{m}[/versions/{v}]/infer`` before FastAPI.

The FastAPI routes of :mod:`mlops_runtime.rest` stay the documented (OpenAPI) and fallback
implementation; this layer answers the same requests with the same data plane calls, status
codes and bodies, only with less per-request overhead (``MLOPS_RUNTIME_INFER_FAST_PATH``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mlops_runtime.body import read_body
from mlops_runtime.codec import HEADER_LENGTH, header_length
from mlops_runtime.dataplane import DataPlane
from mlops_runtime.errors import RuntimeServingError, error_body

log = logging.getLogger(__name__)

INTERNAL_ERROR = b'{"error":"internal server error"}'


def response_headers(length: int, json_length: int | None) -> list[tuple[bytes, bytes]]:
    """Headers of an infer response: JSON, or JSON + binary tensor data (octet-stream with the
    ``Inference-Header-Content-Length`` of the JSON part)."""
    if json_length is None:
        return [(b"content-type", b"application/json"),
                (b"content-length", str(length).encode())]  # fmt: skip
    return [(b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH, str(json_length).encode()),
            (b"content-length", str(length).encode())]  # fmt: skip


def infer_target(path: str) -> tuple[str, str | None] | None:
    """``(model, version)`` of an infer path, ``None`` for any other path."""
    parts = path.split("/")
    n = len(parts)
    if parts[-1] != "infer" or parts[1:3] != ["v2", "models"] or not parts[3]:
        return None
    if n == 5:
        return parts[3], None
    if n == 7 and parts[4] == "versions" and parts[5]:
        return parts[3], parts[5]
    return None


class InferFastPath:
    """ASGI middleware serving ``POST .../infer`` without FastAPI's routing and body handling."""

    def __init__(self, app: Any, plane: DataPlane, limit: int) -> None:
        self.app = app
        self.plane = plane
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] == "POST":
            target = infer_target(scope["path"])
        if target is None:
            await self.app(scope, receive, send)
            return
        plane = self.plane
        started = time.perf_counter()
        plane.batcher.enter()
        json_length = None
        try:
            headers = scope["headers"]
            body = await read_body(headers, receive, self.limit)
            payload, json_length = await plane.infer(
                target[0], target[1], body, header_length(headers)
            )
            status = 200
        except RuntimeServingError as exc:
            status, payload = error_body(exc)
        except Exception:  # a bug, not the client's mistake: still an OIP error body
            log.exception("inference failed")
            status, payload = 500, INTERNAL_ERROR
        finally:
            plane.batcher.leave()
        await send({"type": "http.response.start", "status": status,
                    "headers": response_headers(len(payload), json_length)})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
        plane.metrics.observe_request("infer", status, time.perf_counter() - started)
