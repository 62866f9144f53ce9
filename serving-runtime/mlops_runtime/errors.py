"""Domain errors of the data plane. Transports map them to status codes in one place."""

from __future__ import annotations

import orjson


class RuntimeServingError(Exception):
    """Base of every error the data plane raises on purpose; ``status_code`` is HTTP-flavoured."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(RuntimeServingError):
    """The request is malformed: bad JSON, bad shape, bad datatype."""

    status_code = 400


class ModelNotFound(RuntimeServingError):
    """No model with this name (and version) is served here."""

    status_code = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"{name}" if version is None else f"{name} version {version}"
        super().__init__(f"model {what} not found")


class PayloadTooLarge(RuntimeServingError):
    """The body exceeds the configured size limit."""

    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"payload exceeds the limit of {limit} bytes")


class ModelNotReady(RuntimeServingError):
    """The model is not loaded (yet, or it failed to load)."""

    status_code = 503


class InferenceFailed(RuntimeServingError):
    """The model raised on input that passed validation."""

    status_code = 500


def error_body(exc: RuntimeServingError) -> tuple[int, bytes]:
    """The one mapping of domain errors to HTTP: status code and ``{"error": ...}`` body."""
    return exc.status_code, orjson.dumps({"error": exc.message})
