"""The node stand-in's use of the ``kubernetes`` client: raw JSON, retries, stoppable watches.

The stand-in must not lose fields it does not know, so it asks the typed API methods for the
undecoded response (``_preload_content=False``) and works on plain dicts. Transient answers
(429, 5xx) and connection errors are retried by urllib3 (``Configuration.retries``); a watch
is stopped from another thread by ``kubernetes.watch.Watch.stop()``, which shuts its socket.

This replaced a 300-line hand-written httpx client. ``bench/localstack/kube_clients.py``
measured both against one real kube-apiserver (2-core machine, shared, 400 operations, warm):
status merge patch p50 3.74 ms vs 3.87 ms (httpx), pod GET p50 1.34 ms vs 1.46 ms, watch
244 us vs 306 us per event — the same within noise, so the library wins on lines to own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
#: HTTP statuses worth retrying: throttling, server errors, and gateway-ish failures.
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)

__all__ = ["JSON", "MERGE_PATCH", "ApiException", "Endpoint", "PodWatch", "WatchExpired",
           "connect", "get_or_none", "raw", "retry_on_conflict"]


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is, for the pods' environment and kubeconfigs."""

    server: str
    ca_file: Path | None
    verify: bool

    @property
    def host_port(self) -> tuple[str, int]:
        url = urlsplit(self.server)
        return url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)


def connect(kubeconfig: str | Path, retries: int = 5) -> tuple[client.ApiClient, Endpoint]:
    """An ``ApiClient`` from a kubeconfig (the official loader: *-data, tokens, exec plugins)."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg,
                            persist_config=False)
    cfg.retries = urllib3.Retry(
        total=retries, backoff_factor=0.2, status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=None, raise_on_status=False, respect_retry_after_header=True,
    )
    cfg.connection_pool_maxsize = 32  # one pod worker thread per pod
    api = client.ApiClient(cfg)
    api.user_agent = "mlops-local-node/0.1"
    ca = Path(cfg.ssl_ca_cert) if cfg.ssl_ca_cert else None
    return api, Endpoint(cfg.host.rstrip("/"), ca, bool(cfg.verify_ssl))


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON:
    """Call a typed API method and return the response body as a dict (nothing dropped).

    Connection failures that outlive urllib3's retries raise ``ApiException(status=0)``.
    """
    try:
        resp = call(*args, _preload_content=False, _request_timeout=(5, 15), **kwargs)
    except urllib3.exceptions.HTTPError as exc:
        raise ApiException(status=0, reason=f"transport error: {exc}") from exc
    data = resp.data
    return json.loads(data) if data else {}


def get_or_none(call: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON | None:
    """:func:`raw`, but ``None`` for 404 Not Found."""
    try:
        return raw(call, *args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def retry_on_conflict(fn: Callable[[], JSON | None], *, attempts: int = 8) -> JSON | None:
    """Run ``fn`` again while it fails with 409 Conflict."""
    for attempt in range(attempts):
        try:
            return fn()
        except ApiException as exc:
            if exc.status != 409 or attempt + 1 == attempts:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


class _RawWatch(watch.Watch):
    """Events with the object as the server sent it (no model decoding, fields kept).

    (``deserialize=False`` would do too, but then ERROR events lack ``raw_object`` and 410
    mid-stream raises ``KeyError`` inside the client.)
    """

    def get_return_type(self, func: Callable[..., Any]) -> None:  # noqa: ARG002
        return None


class PodWatch:
    """List + watch all pods as raw dicts; ``stop()`` interrupts a blocked read at once."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self._watch: _RawWatch | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def list_all(self) -> tuple[list[JSON], str]:
        """Every pod (paginated) and the list's resourceVersion."""
        items: list[JSON] = []
        cont: str | None = None
        while True:
            page = raw(self.core.list_pod_for_all_namespaces, limit=500, _continue=cont)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion", "")

    def events(self, resource_version: str, timeout_seconds: int = 55) -> Iterator[JSON]:
        """One bounded watch: ``{"type", "object"}`` events; :class:`WatchExpired` on 410."""
        w = _RawWatch()
        with self._lock:
            if self._stopped:
                return
            self._watch = w
        try:
            for event in w.stream(
                self.core.list_pod_for_all_namespaces, resource_version=resource_version,
                allow_watch_bookmarks=True, timeout_seconds=timeout_seconds,
                _request_timeout=(5, timeout_seconds + 15),
            ):
                yield {"type": event["type"], "object": event["raw_object"]}
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(str(exc)) from exc
            raise
        finally:
            with self._lock:
                self._watch = None

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._watch is not None:
                self._watch.stop()
