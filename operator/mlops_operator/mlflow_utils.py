"""The operator's MLflow access: one client factory, error mapping, idempotent registration.

MLflow is the system of record for runs and model versions. Everything here is safe to call
again after a crash: registration finds the version it made before instead of making another.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import httpx
import kopf

from .mlflow_rest import MlflowException, MlflowRestClient, ModelVersion

__all__ = ["MlflowException", "MlflowRestClient", "is_not_found", "is_unreachable", "make_client",
           "mlflow_errors", "register_version"]


# tags the operator writes on MLflow runs and model versions
TAG_TRAININGRUN = "mlops.dev/trainingrun"
TAG_UID = "mlops.dev/uid"
TAG_MODELVERSION = "mlops.dev/modelversion"
TAG_REGISTRATION_KEY = "mlops.dev/registration-key"


_CLIENTS_LOCK = threading.Lock()


def make_client(tracking_uri: str, timeout: float = 10.0, retries: int = 0) -> MlflowRestClient:
    """:func:`_make_client`, made once even when the first passes ask from 8 threads at once
    (``lru_cache`` alone would let each make its own, with its own experiment cache)."""
    with _CLIENTS_LOCK:
        return _make_client(tracking_uri, timeout, retries)


@lru_cache(maxsize=8)
def _make_client(tracking_uri: str, timeout: float = 10.0, retries: int = 0) -> MlflowRestClient:
    """The operator's MLflow client (:mod:`mlops_operator.mlflow_rest`, REST over one pooled
    ``httpx.Client``; not ``mlflow`` itself, whose import costs ~120 MB). It fails fast:
    ``timeout`` seconds per request and ``retries`` retries (kopf's backoff does the retrying).

    One client per URI and settings, made once and shared by the handlers' threads.
    """
    return MlflowRestClient(tracking_uri, timeout=timeout, retries=retries)


#: HTTP statuses (as MLflow maps its error codes) that say "try again later".
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (MLflow wraps without ``from``)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def is_unreachable(exc: BaseException) -> bool:
    """True for failures worth retrying: no connection, a timeout, or a 429/5xx answer.

    Classified by exception type and HTTP status, never by message text: a 401/403/404 (with
    or without a JSON body) is an answer, not an outage. (``requests``' errors count too when
    something in the process uses it, e.g. a test's own ``mlflow`` client.)
    """
    transport: tuple[type[BaseException], ...] = (
        httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ProxyError,
        ConnectionError, TimeoutError)  # not httpx.UnsupportedProtocol: a bad URI is permanent
    if "requests" in sys.modules:
        import requests

        transport += (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    for err in _chain(exc):
        if isinstance(err, transport):
            return True
    return isinstance(exc, MlflowException) and exc.get_http_status_code() in TRANSIENT_STATUSES


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and getattr(exc, "error_code", "") in (
        "RESOURCE_DOES_NOT_EXIST",
        "NOT_FOUND",
    )


class MlflowUnavailable(kopf.TemporaryError):
    """MLflow unreachable or answering "later": retried by the controller after 1, 2, 5, 10 s…
    of consecutive failures of the object, up to the error's ``delay`` — a one-off 500 (a busy
    sqlite) costs a second, an outage settles at ``delay`` between tries."""

    ramp = True


@contextmanager
def mlflow_errors(what: str, delay: float = 10.0) -> Iterator[None]:
    """Map "MLflow unreachable" to :class:`MlflowUnavailable` (retried with backoff).

    Other MLflow errors propagate for the caller to classify.
    """
    try:
        yield
    except kopf.TemporaryError:
        raise
    except kopf.PermanentError:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise MlflowUnavailable(f"MLflow unreachable while {what}: {exc}", delay=delay) from exc
        raise


def find_registered_version(client: MlflowRestClient, name: str, key: str) -> ModelVersion | None:
    """The version of ``name`` registered earlier under ``key`` (our idempotency tag), if any."""
    try:
        versions = client.search_model_versions(
            f"name = '{name}' and tags.`{TAG_REGISTRATION_KEY}` = '{key}'"
        )
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register_version(
    client: MlflowRestClient,
    name: str,
    source: str,
    run_id: str | None,
    key: str,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    model_id: str | None = None,
) -> ModelVersion:
    """Register ``source`` as a version of ``name`` exactly once per ``key``.

    ``key`` identifies the requester (e.g. the TrainingRun's uid, or the ModelVersion's uid):
    after a crash between "created" and "recorded in status", the retry finds the version by
    its tag instead of creating a second one. The registered model is created if missing.
    """
    existing = find_registered_version(client, name, key)
    if existing is not None:
        return existing
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    all_tags = {TAG_REGISTRATION_KEY: key, **(tags or {})}
    return client.create_model_version(
        name=name, source=source, run_id=run_id, tags=all_tags, description=description,
        model_id=model_id,
    )
