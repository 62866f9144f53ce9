"""A small, robust Kubernetes API client for the node stand-in (httpx + the kubeconfig loader).

The node stand-in needs raw JSON objects (it must not lose fields it does not know), explicit
patch content types, bounded watches and retries on transient errors, so it talks to the API
with httpx; the ``kubernetes`` package is only used to read the kubeconfig (certificates, tokens,
exec plugins).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

#: HTTP statuses worth retrying: throttling, server errors, and gateway-ish failures.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:300]
        self.reason = reason
        self.message = message
        super().__init__(f"{method} {path}: {status} {reason} {message}".strip())

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list."""


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (from a kubeconfig)."""

    server: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    token: str | None
    verify: bool = True
    tls_server_name: str | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | Path, context: str | None = None) -> Connection:
        """Load a kubeconfig with the official loader (it handles *-data and exec plugins)."""
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(
            config_file=str(kubeconfig), context=context, client_configuration=cfg,
            persist_config=False,
        )
        token = None
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if auth:
            token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
        return cls(
            server=cfg.host.rstrip("/"),
            ca_file=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            token=token,
            verify=bool(cfg.verify_ssl),
            tls_server_name=getattr(cfg, "tls_server_name", None),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.verify else (
            ssl.create_default_context()
        )
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    @property
    def host_port(self) -> tuple[str, int]:
        url = httpx.URL(self.server)
        port = url.port or (443 if url.scheme == "https" else 80)
        return url.host, port


class KubeClient:
    """Thread-safe JSON client with retries for transient failures."""

    def __init__(self, conn: Connection, *, timeout: float = 15.0, retries: int = 5) -> None:
        self.conn = conn
        self.retries = retries
        headers = {"Accept": "application/json", "User-Agent": "mlops-local-node/0.1"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        self._verify = conn.ssl_context()
        self._headers = headers
        self._http = httpx.Client(
            base_url=conn.server, verify=self._verify, headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
        )
        self._closed = threading.Event()
        self._streams: set[httpx.Client] = set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            streams = list(self._streams)
            sockets = list(self._sockets)
        for sock in sockets:  # wakes a thread blocked reading a watch, at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for client in streams:
            with contextlib.suppress(Exception):  # closing from another thread may race
                client.close()
        self._http.close()

    # -- plain requests ---------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        retry: bool = True,
    ) -> JSON:
        """Send one request; retry connection errors and 429/5xx with backoff."""
        attempts = self.retries if retry else 1
        delay = 0.2
        last: Exception | None = None
        for attempt in range(attempts):
            if self._closed.is_set():
                raise ApiError(0, {"message": "client closed"}, method, path)
            try:
                resp = self._http.request(
                    method, path, params=params,
                    content=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type} if body is not None else None,
                )
            except (httpx.TransportError, RuntimeError) as exc:
                last = exc
                log.debug("%s %s failed (%s), attempt %d", method, path, exc, attempt + 1)
            else:
                if resp.status_code < 300:
                    return resp.json() if resp.content else {}
                try:
                    payload: Any = resp.json()
                except ValueError:
                    payload = resp.text
                err = ApiError(resp.status_code, payload, method, path)
                if not (err.transient and retry):
                    raise err
                last = err
            if attempt + 1 < attempts:
                time.sleep(delay)
                delay = min(delay * 2, 3.0)
        if isinstance(last, ApiError):
            raise last
        raise ApiError(0, {"message": f"transport error: {last}"}, method, path)

    def get(self, path: str, **params: Any) -> JSON:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: JSON) -> JSON:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: JSON, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", path, body=body)

    def get_or_none(self, path: str) -> JSON | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # -- list + watch -----------------------------------------------------------------------
    def list_all(self, path: str, **params: Any) -> tuple[list[JSON], str]:
        """List with pagination; returns the items and the list's resourceVersion."""
        items: list[JSON] = []
        cont: str | None = None
        while True:
            query = {"limit": 500, **params}
            if cont:
                query["continue"] = cont
            page = self.get(path, **query)
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items, (page.get("metadata") or {}).get("resourceVersion", "")

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 60, **params: Any
    ) -> Iterator[JSON]:
        """Yield watch events (``{"type", "object"}``) for one bounded watch request.

        Raises :class:`WatchExpired` on 410 Gone (as an HTTP status or an ERROR event). The
        server ends the watch after ``timeout_seconds``; the client read timeout is a little
        longer, so a silent connection can never hang the caller.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            **params,
        }
        client = httpx.Client(
            base_url=self.conn.server, verify=self._verify, headers=self._headers,
            timeout=httpx.Timeout(timeout_seconds + 15.0, connect=5.0),
        )
        with self._lock:
            self._streams.add(client)
        sock: socket.socket | None = None
        try:
            with client.stream("GET", path, params=query) as resp:
                stream = resp.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    with self._lock:
                        self._sockets.add(sock)
                if self._closed.is_set():
                    return
                if resp.status_code == 410:
                    raise WatchExpired(path)
                if resp.status_code >= 300:
                    resp.read()
                    try:
                        payload: Any = resp.json()
                    except ValueError:
                        payload = resp.text
                    raise ApiError(resp.status_code, payload, "WATCH", path)
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise WatchExpired(path)
                        raise ApiError(int(status.get("code") or 500), status, "WATCH", path)
                    yield event
        finally:
            with self._lock:
                self._streams.discard(client)
                if sock is not None:
                    self._sockets.discard(sock)
            client.close()


def retry_on_conflict(
    fn: Callable[[], JSON | None], *, attempts: int = 8, on_conflict: Callable[[], None] | None = None
) -> JSON | None:
    """Run ``fn`` again (after ``on_conflict``) while it fails with 409 Conflict."""
    for attempt in range(attempts):
        try:
            return fn()
        except ApiError as exc:
            if exc.status != 409 or attempt + 1 == attempts:
                raise
            if on_conflict is not None:
                on_conflict()
            time.sleep(0.05 * (attempt + 1))
    return None
