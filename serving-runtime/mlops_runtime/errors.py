"""Domain errors of the data plane. Transports map them to status codes in one place each:
:func:`error_body` for HTTP, :func:`grpc_status` for gRPC."""

from __future__ import annotations

import orjson


class RuntimeServingError(Exception):
    """Base of every error the data plane raises on purpose; ``status_code`` is HTTP-flavoured."""

    status_code: int = 500
    #: name of the ``grpc.StatusCode`` of this error (the protocol's gRPC mapping)
    grpc_code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(RuntimeServingError):
    """The request is malformed: bad JSON, bad shape, bad datatype."""

    status_code = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(RuntimeServingError):
    """No model with this name (and version) is served here."""

    status_code = 404
    grpc_code = "NOT_FOUND"

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"{name}" if version is None else f"{name} version {version}"
        super().__init__(f"model {what} not found")


class PayloadTooLarge(RuntimeServingError):
    """The body exceeds the configured size limit."""

    status_code = 413
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, limit: int) -> None:
        super().__init__(f"payload exceeds the limit of {limit} bytes")


class ClientDisconnected(RuntimeServingError):
    """The client went away before sending its whole body. Nobody is left to answer: it is
    counted as a disconnect (499, nginx's code), never as a client or server error."""

    status_code = 499
    grpc_code = "CANCELLED"

    def __init__(self) -> None:
        super().__init__("client disconnected before sending the whole body")


class ModelNotReady(RuntimeServingError):
    """The model is not loaded (yet, or it failed to load)."""

    status_code = 503
    grpc_code = "UNAVAILABLE"


class InferenceFailed(RuntimeServingError):
    """The model raised on input that passed validation."""

    status_code = 500


def error_body(exc: RuntimeServingError) -> tuple[int, bytes]:
    """The one mapping of domain errors to HTTP: status code and ``{"error": ...}`` body."""
    return exc.status_code, orjson.dumps({"error": exc.message})


def grpc_status(exc: RuntimeServingError) -> tuple[str, str]:
    """The one mapping of domain errors to gRPC: ``grpc.StatusCode`` name and details."""
    return exc.grpc_code, exc.message
