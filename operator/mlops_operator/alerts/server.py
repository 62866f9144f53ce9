"""The Alertmanager webhook receiver: a small aiohttp server inside the operator process.

``POST /api/v1/alerts`` with ``Authorization: Bearer <token>`` and Alertmanager's webhook
payload (version 4). Answers, always JSON:

=====  ================================================================================
200    ``{"received": n, "results": [{alert, fingerprint, status, action, reason, ...}]}``:
       what happened to each alert (created / skipped with a reason); also for unknown alerts
       and deleted deployments, because Alertmanager retries anything that is not 2xx
400    ``{"error": ...}``: not JSON, or not a version-4 payload; nothing created
401    ``{"error": ...}``: missing or wrong bearer token; the body is not even read
413    ``{"error": ...}``: body over ``max_body_bytes`` (default 1 MiB); nothing created
503    ``{"error": ..., "results": [...]}``: the Kubernetes API failed transiently (or the
       token Secret cannot be read); Alertmanager sends the notification again, and what was
       created before is found again by name
=====  ================================================================================

``GET /healthz`` answers 200 without a token. The Kubernetes calls block, so they run in a
small thread pool of the receiver's own, away from kopf's event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from .. import kube
from .payload import PayloadError, parse_notification
from .service import Retrainer, TransientError

log = logging.getLogger(__name__)

PATH = "/api/v1/alerts"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WEBHOOK_REQUESTS = Counter(
    "mlops_alert_webhook_requests", "Alertmanager webhook requests, by HTTP status code", ["code"]
)


@dataclass(frozen=True)
class ReceiverConfig:
    """How the receiver listens and authenticates (from the operator settings, see
    :meth:`from_settings`). The token is ``token`` when set (development and tests), else the
    key ``secret_key`` of the Secret ``secret_namespace/secret_name``, re-read every
    ``token_ttl`` seconds (and at most every 5 s after a wrong token, so a rotation applies
    quickly)."""

    port: int = 8082
    host: str = "0.0.0.0"
    token: str | None = None
    secret_name: str = ""
    secret_namespace: str = ""  # default: the operator's own namespace, else "default"
    secret_key: str = "token"
    max_body_bytes: int = 1 << 20
    namespaces: tuple[str, ...] = ()
    token_ttl: float = 30.0
    threads: int = 4

    @classmethod
    def from_settings(cls, settings: Any) -> ReceiverConfig:
        """From :class:`~mlops_operator.settings.OperatorSettings` (fields it lacks keep their
        defaults here)."""
        token = getattr(settings, "alert_receiver_token", None)
        if token is not None and hasattr(token, "get_secret_value"):
            token = token.get_secret_value()
        return cls(
            port=int(getattr(settings, "alert_receiver_port", cls.port)),
            host=str(getattr(settings, "alert_receiver_host", cls.host)),
            token=token or None,
            secret_name=str(getattr(settings, "alert_receiver_token_secret_name", "") or ""),
            secret_namespace=str(
                getattr(settings, "alert_receiver_token_secret_namespace", "") or ""),
            secret_key=str(getattr(settings, "alert_receiver_token_secret_key", "") or "token"),
            max_body_bytes=int(getattr(settings, "alert_receiver_max_body_bytes",
                                       cls.max_body_bytes)),
            namespaces=tuple(getattr(settings, "namespaces", ()) or ()),
        )

    @property
    def authenticated(self) -> bool:
        return bool(self.token or self.secret_name)


class TokenUnavailable(Exception):
    """The token Secret could not be read (→ 503: Alertmanager retries)."""


@dataclass
class TokenSource:
    """The expected bearer token: fixed, or read from a Secret and cached."""

    config: ReceiverConfig
    _value: str | None = None
    _read_at: float = field(default=-1e9)

    def _namespace(self) -> str:
        if self.config.secret_namespace:
            return self.config.secret_namespace
        try:
            return SA_NAMESPACE_FILE.read_text().strip() or "default"
        except OSError:
            return "default"

    def _read(self) -> str:
        import base64

        ns, name, key = self._namespace(), self.config.secret_name, self.config.secret_key
        try:
            secret = kube.get("v1", "Secret", ns, name)
        except Exception as exc:
            raise TokenUnavailable(
                f"reading Secret {ns}/{name}: {kube.error_message(exc)}") from exc
        raw = ((secret or {}).get("data") or {}).get(key)
        if not raw:
            raise TokenUnavailable(f"Secret {ns}/{name} has no key {key!r}")
        try:
            return base64.b64decode(raw).decode().strip()
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError
            raise TokenUnavailable(f"Secret {ns}/{name} key {key!r}: {exc}") from exc

    def current(self, stale_after: float | None = None) -> str:
        """The token (blocking: may read the Secret)."""
        if self.config.token:
            return self.config.token
        age = time.monotonic() - self._read_at
        if self._value is None or age > (stale_after if stale_after is not None
                                         else self.config.token_ttl):
            self._value = self._read()
            self._read_at = time.monotonic()
        return self._value

    def matches(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (constant-time compare)."""
        scheme, _, given = (header or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return False
        if hmac.compare_digest(given.encode(), self.current().encode()):
            return True
        # a rotated Secret: look again, but not more than every 5 s
        return (not self.config.token
                and hmac.compare_digest(given.encode(), self.current(stale_after=5).encode()))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (stops reading there)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    """Every answer is JSON with a status count: aiohttp's own 404/405 too."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = _error(exc.status, exc.reason or "error")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("alert receiver: unexpected error")
        response = _error(500, "internal error")
    WEBHOOK_REQUESTS.labels(code=str(response.status)).inc()
    return response


def create_app(config: ReceiverConfig, retrainer: Retrainer | None = None,
               executor: ThreadPoolExecutor | None = None) -> web.Application:
    """The receiver's aiohttp application (tests call it with aiohttp's test client)."""
    retrainer = retrainer or Retrainer(namespaces=config.namespaces)
    tokens = TokenSource(config)
    pool = executor or ThreadPoolExecutor(config.threads, thread_name_prefix="alert-receiver")

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def receive(request: web.Request) -> web.Response:
        try:
            ok = await blocking(tokens.matches, request.headers.get("Authorization"))
        except TokenUnavailable as exc:
            log.error("alert receiver: no token to check against: %s", exc)
            return _error(503, f"the receiver cannot read its token: {exc}")
        if not ok:
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        limit = config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, f"body larger than {limit} bytes")
        body = await _read_limited(request, limit)
        if body is None:
            return _error(413, f"body larger than {limit} bytes")
        try:
            notification = parse_notification(body)
        except PayloadError as exc:
            return _error(400, str(exc))
        try:  # the alerts of a group in parallel (the per-deployment lock keeps them apart)
            per_alert = await asyncio.gather(
                *(blocking(retrainer.handle_alert, a) for a in notification.alerts))
            results = [r for rs in per_alert for r in rs]
        except TransientError as exc:
            log.warning("alert receiver: %s (Alertmanager will retry)", exc)
            return _error(503, f"Kubernetes API unavailable: {exc}")
        return web.json_response({"received": len(notification.alerts),
                                  "results": [r.to_json() for r in results]},
                                 dumps=lambda o: json.dumps(o, separators=(",", ":")))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # the body limit is enforced by _read_limited; aiohttp's own (text) 413 never triggers
    app = web.Application(middlewares=[_json_errors], client_max_size=config.max_body_bytes + 1)
    app.router.add_post(PATH, receive)
    app.router.add_get("/healthz", healthz)

    async def _close_pool(_: web.Application) -> None:
        if executor is None:
            pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(_close_pool)
    return app


@dataclass
class ReceiverHandle:
    """A running receiver: what :func:`stop_receiver` needs, and where it listens."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{PATH}"


async def start_receiver(settings: Any = None, *, config: ReceiverConfig | None = None
                         ) -> ReceiverHandle | None:
    """Start the receiver on ``settings.alert_receiver_port`` (call from the startup handler).

    None (and a log line saying why) when it is disabled: port 0, or no token configured —
    an unauthenticated endpoint that starts training jobs is never served. A port that is
    taken raises ``OSError``.
    """
    cfg = config or ReceiverConfig.from_settings(settings)
    if not cfg.port:
        log.info("alert receiver disabled (MLOPS_ALERT_RECEIVER_PORT=0)")
        return None
    if not cfg.authenticated:
        log.warning("alert receiver disabled: no bearer token configured (set "
                    "MLOPS_ALERT_RECEIVER_TOKEN_SECRET_NAME, or MLOPS_ALERT_RECEIVER_TOKEN "
                    "for development)")
        return None
    runner = web.AppRunner(create_app(cfg), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("alert receiver listening on %s:%s%s", cfg.host, cfg.port, PATH)
    return ReceiverHandle(runner, cfg.host, cfg.port)


async def stop_receiver(handle: ReceiverHandle | None) -> None:
    """Stop a receiver started by :func:`start_receiver` (None: nothing to do)."""
    if handle is not None:
        await handle.runner.cleanup()
