"""The router: a raw ASGI app that forwards each request to a variant.

Variant choice: by the sticky header (weighted rendezvous hashing) when configured and present,
otherwise smooth weighted round robin. Within a variant, endpoints are used round robin. The
mirror, if any, gets a copy of the request in a background task; its response is dropped and it
can neither delay nor change the client's response. The config is reloaded when its source
changes and endpoints are rediscovered periodically, both without restart.

The live state (config, splitter, endpoints) is in :mod:`~mlops_runtime.router.state`, the
metrics in :mod:`~mlops_runtime.router.metrics`; the body is read by
:func:`mlops_runtime.body.read_body`, shared with the model server, whose errors are mapped to
HTTP by :func:`mlops_runtime.errors.error_body`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlops_runtime.body import read_body
from mlops_runtime.errors import ClientDisconnected, RuntimeServingError, error_body
from mlops_runtime.router.config import parse_config
from mlops_runtime.router.discovery import EndpointSliceDiscovery, current_namespace
from mlops_runtime.router.metrics import RouterMetrics
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.router.state import ConfigSource, RouterState
from mlops_runtime.router.upstream import (
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamUnreached,
)

__all__ = ["ConfigSource", "Router", "RouterMetrics", "RouterState", "create_router"]

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
VARIANT_HEADER = b"x-mlops-variant"
_JSON = [(b"content-type", b"application/json")]
#: An upstream's answer that says "not ready, nothing was run" (the runtime's ModelNotReady,
#: a pod loading its model, e.g. restarted and not yet out of discovery): the request is sent
#: to another endpoint like one refused at connect (Envoy's ``retriable-status-codes: 503``)
UNAVAILABLE = 503
_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding",
                            b"date", b"server"})  # fmt: skip


async def _respond(send: Send, status: int, body: bytes, headers: Headers | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers if headers is not None else _JSON})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class _NoAnswer(Exception):
    """No endpoint of a variant answered: the status and message the client would get, or the
    upstream's own "not ready" answer (``response``) when every endpoint gave that."""

    def __init__(self, status: int, message: str,
                 response: UpstreamResponse | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.response = status, message, response


async def _error(send: Send, status: int, message: str) -> None:
    await _respond(send, status, orjson.dumps({"error": message}))


class Router:
    """The ASGI application."""

    def __init__(
        self,
        settings: RouterSettings,
        discovery: EndpointSliceDiscovery | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace or current_namespace()
        self.source = source or ConfigSource(settings, self.namespace)
        self.discovery = discovery or EndpointSliceDiscovery(pod_fallback=settings.pod_fallback)
        self.metrics = RouterMetrics()
        self.pool = UpstreamPool(timeout_s=settings.upstream_timeout_s,
                                 idle_s=settings.upstream_idle_s)  # fmt: skip
        self.state: RouterState | None = None
        self.mirror_in_flight = 0
        self._rediscovery: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        #: upstreams with a ``mlops_router_variant_endpoints`` series (removed with the upstream)
        self._endpoint_series: set[str] = set()

    # -- config and discovery -----------------------------------------------------------------

    def _apply_text(self, text: str) -> None:
        config = parse_config(text)
        if self.state is None:
            self.state = RouterState(config, config.namespace or self.namespace)
        else:
            self.state.apply(config)
            self.state.namespace = config.namespace or self.namespace
        self.metrics.weight.clear()
        for v in config.variants:
            self.metrics.weight.labels(v.name).set(v.weight)
        for gone in self._endpoint_series - {u.name for u in self.state.upstreams()}:
            self.metrics.endpoints.remove(gone)  # a canary promoted or aborted: no stale series
            self._endpoint_series.discard(gone)
        self.metrics.reloads.labels("ok").inc()
        log.info("router config applied: weights %s, sticky header %s, mirror %s",
                 config.weights, config.sticky_header,
                 config.mirror.name if config.mirror else None)  # fmt: skip

    async def reload_once(self) -> bool:
        """Apply the config if it changed; on a bad config keep the previous one."""
        try:
            text = await asyncio.to_thread(self.source.poll)
            if text is None:
                return False
            self._apply_text(text)
        except Exception as exc:  # noqa: BLE001 - keep serving with the last good config
            self.metrics.reloads.labels("error").inc()
            log.error("router config not applied: %s", exc)
            return False
        await self.discover_once()
        return True

    @staticmethod
    def _untried(targets: Any, tried: set[tuple[str, int]]) -> tuple[str, int] | None:
        return next((e for e in (targets.pick() for _ in targets.urls)
                     if e is not None and e not in tried), None)

    async def _rediscover(self) -> None:
        """One discovery now, shared by every request that waits for it."""
        task = self._rediscovery
        if task is None or task.done():
            task = self._rediscovery = asyncio.ensure_future(self.discover_once())
        await asyncio.shield(task)

    async def discover_once(self) -> None:
        """Refresh the endpoints of every Service-backed upstream."""
        state = self.state
        if state is None:
            return
        for upstream in state.upstreams():
            if upstream.service is not None:
                try:
                    urls = await asyncio.to_thread(self.discovery.endpoints, state.namespace,
                                                   upstream.service, upstream.port)  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - keep the last known endpoints
                    log.warning("discovery of service %s failed: %s", upstream.service, exc)
                    continue
            # a config reload during the look-up may have removed the upstream (a canary
            # promoted or aborted): nothing to refresh then
            targets = state.targets.get(upstream.name)
            if targets is None:
                continue
            if upstream.service is not None:
                targets.set(urls)
            self.metrics.endpoints.labels(upstream.name).set(len(targets.urls))
            self._endpoint_series.add(upstream.name)

    async def _every(self, seconds: float, step: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            await step()

    async def startup(self) -> None:
        """Load the config (retrying until valid) and start the reload and discovery loops."""
        await self.reload_once()
        self._tasks = [
            asyncio.create_task(self._every(self.settings.reload_interval_s, self.reload_once)),
            asyncio.create_task(
                self._every(self.settings.discovery_interval_s, self.discover_once)
            ),  # fmt: skip
        ]

    async def shutdown(self) -> None:
        """Stop the loops, let mirror copies finish briefly, close connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._mirror_tasks:
            await asyncio.wait(self._mirror_tasks, timeout=1.0)
        await self.pool.close()

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _local(self, path: str, send: Send) -> bool:
        """Router-local endpoints; True if handled."""
        state = self.state
        if path == "/metrics":
            await _respond(send, 200, generate_latest(self.metrics.registry),
                           [(b"content-type", CONTENT_TYPE_LATEST.encode())])  # fmt: skip
        elif path == "/router/healthz":
            await _respond(send, 200, b'{"live":true}')
        elif path == "/router/ready":
            ok = state is not None and state.ready()
            await _respond(send, 200 if ok else 503,
                           orjson.dumps({"ready": ok} if ok else
                                        {"ready": False, "error": "no endpoints yet"}))  # fmt: skip
        elif path == "/router/status":
            await _respond(send, 200, orjson.dumps({"ready": False} if state is None
                                                   else state.status()))  # fmt: skip
        else:
            return False
        return True

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if (path == "/metrics" or path.startswith("/router/")) and await self._local(path, send):
            return
        state = self.state
        if state is None:
            await _error(send, 503, "router has no valid config yet")
            return
        started = time.perf_counter()
        headers: Headers = scope["headers"]
        try:
            body = await read_body(headers, receive, self.settings.max_request_bytes)
        except ClientDisconnected:
            # nobody to answer, nothing to forward: not a request of any variant, no 4xx
            self.metrics.disconnects.inc()
            return
        except RuntimeServingError as exc:
            await _respond(send, *error_body(exc))
            return
        variant = state.choose(state.sticky_key(headers))
        target = scope.get("raw_path") or path.encode()
        if scope.get("query_string"):
            target = target + b"?" + scope["query_string"]
        target_str = target.decode("latin-1")
        method = scope["method"]
        if state.config.mirror is not None:
            self._mirror(state, state.config.mirror.name, method, target_str, headers, body)
        tried: set[str] = set()
        unavailable: tuple[str, UpstreamResponse] | None = None
        while True:
            tried.add(variant)
            try:
                response = await self._exchange(state, variant, method, target_str, headers,
                                                body)
            except _NoAnswer as exc:
                if exc.response is not None:
                    unavailable = (variant, exc.response)
                # the variant has no endpoint left (a canary being added or removed) or none
                # ready: another variant answers rather than the client getting an error
                fallback = state.fallback(tried)
                if fallback is not None:
                    variant = fallback
                    continue
                if unavailable is None:
                    await _error(send, exc.status, exc.message)
                    return
                variant, response = unavailable  # nobody ready: the upstream's own 503
            break
        out = [(k, v) for k, v in response.headers if k not in _DROP_RESPONSE]
        out.append((VARIANT_HEADER, variant.encode()))
        await _respond(send, response.status, response.body, out)
        child = self.metrics.child
        child(self.metrics.requests, variant, str(response.status)).inc()
        child(self.metrics.latency, variant).observe(time.perf_counter() - started)

    async def _exchange(self, state: RouterState, variant: str, method: str, target: str,
                        headers: Headers, body: bytes) -> UpstreamResponse:  # fmt: skip
        """The answer of an endpoint of ``variant``. An endpoint that refuses or resets before
        answering (a pod going away) or answers 503 (a pod not ready: restarted, loading) is
        ejected for a while and replaced by another endpoint of the variant: neither ran the
        request, so sending it again is safe. A timeout or a broken answer is not retried."""
        child = self.metrics.child
        targets = state.targets[variant]
        endpoint = targets.pick()
        if endpoint is None:
            child(self.metrics.requests, variant, "503").inc()
            raise _NoAnswer(503, f"variant {variant} has no ready endpoints")
        tried = {endpoint}
        rediscovered = False
        while True:
            try:
                response = await self.pool.request(endpoint[0], endpoint[1], method, target,
                                                   headers, body)  # fmt: skip
            except UpstreamUnreached as exc:
                targets.eject(endpoint, self.settings.ejection_s)
                child(self.metrics.ejections, variant, "unreached").inc()
                nxt = self._untried(targets, tried)
                if nxt is None and not rediscovered:
                    # every known endpoint is gone: the pods that replaced them are not
                    # known yet (a rolling update outpacing discovery); look once more
                    rediscovered = True
                    await self._rediscover()
                    targets = state.targets.get(variant, targets)
                    nxt = self._untried(targets, tried)
                if nxt is None:
                    child(self.metrics.errors, variant).inc()
                    child(self.metrics.requests, variant, "502").inc()
                    raise _NoAnswer(502, f"variant {variant}: {exc}") from exc
            except UpstreamError as exc:
                child(self.metrics.errors, variant).inc()
                child(self.metrics.requests, variant, "502").inc()
                raise _NoAnswer(502, f"variant {variant}: {exc}") from exc
            else:
                if response.status != UNAVAILABLE:
                    return response
                targets.eject(endpoint, self.settings.ejection_s)
                child(self.metrics.ejections, variant, "unavailable").inc()
                nxt = self._untried(targets, tried)
                if nxt is None:
                    raise _NoAnswer(503, f"variant {variant} has no ready endpoints", response)
            tried.add(nxt)
            endpoint = nxt

    def _mirror(self, state: RouterState, name: str, method: str, target: str,
                headers: Headers, body: bytes) -> None:  # fmt: skip
        endpoint = state.targets[name].pick()
        if endpoint is None or self.mirror_in_flight >= self.settings.mirror_max_in_flight:
            self.metrics.child(self.metrics.mirror, "dropped").inc()
            return
        self.mirror_in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._send_mirror(endpoint, method, target, headers, body)
        )
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    async def _send_mirror(self, endpoint: tuple[str, int], method: str, target: str,
                           headers: Headers, body: bytes) -> None:  # fmt: skip
        try:
            response = await self.pool.request(endpoint[0], endpoint[1], method, target,
                                               headers, body)  # fmt: skip
            self.metrics.child(self.metrics.mirror,
                               "ok" if response.status < 400 else "error").inc()  # fmt: skip
        except Exception:  # noqa: BLE001 - a mirror failure never reaches the client
            self.metrics.child(self.metrics.mirror, "error").inc()
        finally:
            self.mirror_in_flight -= 1


def create_router(settings: RouterSettings | None = None, **kwargs: Any) -> Router:
    """Build the router ASGI app from settings (env ``MLOPS_ROUTER_*``)."""
    return Router(settings or RouterSettings(), **kwargs)
