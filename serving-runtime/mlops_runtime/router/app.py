"""The router: a raw ASGI app that forwards each request to a variant.

Variant choice: by the sticky header (weighted rendezvous hashing) when configured and present,
otherwise smooth weighted round robin. Within a variant, endpoints are used round robin. The
mirror, if any, gets a copy of the request in a background task; its response is dropped and it
can neither delay nor change the client's response. The config is reloaded when its source
changes and endpoints are rediscovered periodically, both without restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mlops_runtime.metrics import LATENCY_BUCKETS
from mlops_runtime.router.config import RouterConfig, Upstream, parse_config
from mlops_runtime.router.discovery import (
    EndpointSliceDiscovery,
    current_namespace,
    read_configmap,
)
from mlops_runtime.router.hashing import SmoothWeightedRoundRobin, sticky_choice
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.router.upstream import UpstreamError, UpstreamPool

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
VARIANT_HEADER = b"x-mlops-variant"
_JSON = [(b"content-type", b"application/json")]


class RouterMetrics:
    """Per-variant metrics of the router, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlops_router_requests", "Forwarded requests",
                                ["variant", "code"], registry=r)  # fmt: skip
        self.latency = Histogram("mlops_router_request_duration_seconds",
                                 "Latency through the router", ["variant"],
                                 buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.errors = Counter("mlops_router_upstream_errors", "Upstream failures",
                              ["variant"], registry=r)  # fmt: skip
        self.mirror = Counter("mlops_router_mirror_requests", "Mirrored copies by result",
                              ["result"], registry=r)  # fmt: skip
        self.weight = Gauge("mlops_router_variant_weight", "Configured weight", ["variant"],
                            registry=r)  # fmt: skip
        self.endpoints = Gauge("mlops_router_variant_endpoints", "Ready endpoints", ["variant"],
                               registry=r)  # fmt: skip
        self.reloads = Counter("mlops_router_config_reloads", "Config reloads by result",
                               ["result"], registry=r)  # fmt: skip


@dataclass(slots=True)
class _Targets:
    """The endpoints of one upstream and a round-robin cursor over them."""

    urls: list[tuple[str, int]] = field(default_factory=list)
    cursor: Any = None

    def set(self, urls: list[str]) -> None:
        parsed = []
        for url in urls:
            parts = urlsplit(url)
            if parts.hostname and parts.port:
                parsed.append((parts.hostname, parts.port))
        if parsed != self.urls:
            self.urls = parsed
            self.cursor = itertools.cycle(parsed) if parsed else None

    def pick(self) -> tuple[str, int] | None:
        return next(self.cursor) if self.cursor is not None else None


class RouterState:
    """The live config, the traffic splitter and the discovered endpoints."""

    def __init__(self, config: RouterConfig, namespace: str) -> None:
        self.namespace = namespace
        self.config = config
        self.targets: dict[str, _Targets] = {}
        self.apply(config)

    def apply(self, config: RouterConfig) -> None:
        """Switch to a new config; endpoints of unchanged upstreams are kept."""
        self.config = config
        self.weights = config.weights
        self.splitter = SmoothWeightedRoundRobin(self.weights)
        upstreams = self.upstreams()
        self.targets = {u.name: self.targets.get(u.name, _Targets()) for u in upstreams}
        for u in upstreams:
            if u.endpoints is not None:
                self.targets[u.name].set(u.endpoints)

    def upstreams(self) -> list[Upstream]:
        """Variants plus the mirror."""
        config = self.config
        return [*config.variants, *([config.mirror] if config.mirror else [])]

    def choose(self, sticky_key: str | None) -> str:
        """The variant for a request."""
        if sticky_key:
            return sticky_choice(sticky_key, self.weights)
        return self.splitter.next()

    def ready(self) -> bool:
        """Every variant with a positive weight has at least one endpoint."""
        return all(self.targets[v.name].urls for v in self.config.variants if v.weight > 0)


class ConfigSource:
    """Reads the config text from a file or a ConfigMap; :meth:`poll` returns new text only."""

    def __init__(self, settings: RouterSettings, namespace: str, core_api: Any = None) -> None:
        self.settings = settings
        self.namespace = namespace
        self._core_api = core_api
        self._digest: str | None = None

    def read(self) -> str:
        """The current config text (blocking)."""
        s = self.settings
        if s.config:
            with open(s.config, encoding="utf-8") as fh:
                return fh.read()
        if s.configmap:
            namespace, _, name = s.configmap.rpartition("/")
            return read_configmap(namespace or self.namespace, name, s.configmap_key,
                                  self._core_api)  # fmt: skip
        raise ValueError("no router config: set MLOPS_ROUTER_CONFIG or MLOPS_ROUTER_CONFIGMAP")

    def poll(self) -> str | None:
        """The config text if it changed since the last call, else ``None`` (blocking)."""
        text = self.read()
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        return text


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
        self.pool = UpstreamPool(timeout_s=settings.upstream_timeout_s)
        self.state: RouterState | None = None
        self.mirror_in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        self._children: dict[tuple[Any, ...], Any] = {}

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

    async def discover_once(self) -> None:
        """Refresh the endpoints of every Service-backed upstream."""
        state = self.state
        if state is None:
            return
        for upstream in state.upstreams():
            if upstream.service is None:
                urls = upstream.endpoints or []
            else:
                try:
                    urls = await asyncio.to_thread(self.discovery.endpoints, state.namespace,
                                                   upstream.service, upstream.port)  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - keep the last known endpoints
                    log.warning("discovery of service %s failed: %s", upstream.service, exc)
                    continue
                state.targets[upstream.name].set(urls)
            self.metrics.endpoints.labels(upstream.name).set(len(state.targets[upstream.name].urls))

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

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes,
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
        await send({"type": "http.response.start", "status": status,
                    "headers": headers if headers is not None else _JSON})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Send, status: int, message: str) -> None:
        await self._respond(send, status, orjson.dumps({"error": message}))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self.settings.max_request_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _local(self, path: str, send: Send) -> bool:
        """Router-local endpoints; True if handled."""
        if path == "/metrics":
            await self._respond(send, 200, generate_latest(self.metrics.registry),
                                [(b"content-type", CONTENT_TYPE_LATEST.encode())])  # fmt: skip
        elif path == "/router/healthz":
            await self._respond(send, 200, b'{"live":true}')
        elif path == "/router/ready":
            ok = self.state is not None and self.state.ready()
            await self._respond(send, 200 if ok else 503,
                                orjson.dumps({"ready": ok} if ok else
                                             {"ready": False, "error": "no endpoints yet"}))  # fmt: skip
        elif path == "/router/status":
            state = self.state
            body = {"ready": bool(state and state.ready())}
            if state is not None:
                body.update(weights=state.weights, stickyHeader=state.config.sticky_header,
                            mirror=state.config.mirror.name if state.config.mirror else None,
                            endpoints={n: [f"http://{h}:{p}" for h, p in t.urls]
                                       for n, t in state.targets.items()})  # fmt: skip
            await self._respond(send, 200, orjson.dumps(body))
        else:
            return False
        return True

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if (path == "/metrics" or path.startswith("/router/")) and await self._local(path, send):
            return
        state = self.state
        if state is None:
            await self._error(send, 503, "router has no valid config yet")
            return
        started = time.perf_counter()
        body = await self._read_body(scope, receive)
        if body is None:
            await self._error(send, 413, f"payload exceeds {self.settings.max_request_bytes} bytes")
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        sticky_key = None
        if state.config.sticky_header:
            wanted = state.config.sticky_header.encode()
            for name, value in headers:
                if name == wanted:
                    sticky_key = value.decode("latin-1")
                    break
        variant = state.choose(sticky_key)
        target = scope.get("raw_path") or path.encode()
        if scope.get("query_string"):
            target = target + b"?" + scope["query_string"]
        target_str = target.decode("latin-1")
        method = scope["method"]
        mirror = state.config.mirror
        if mirror is not None:
            self._mirror(state, mirror.name, method, target_str, headers, body)
        endpoint = state.targets[variant].pick()
        if endpoint is None:
            self._child(self.metrics.requests, variant, "503").inc()
            await self._error(send, 503, f"variant {variant} has no ready endpoints")
            return
        try:
            response = await self.pool.request(endpoint[0], endpoint[1], method, target_str,
                                               headers, body)  # fmt: skip
        except UpstreamError as exc:
            self._child(self.metrics.errors, variant).inc()
            self._child(self.metrics.requests, variant, "502").inc()
            await self._error(send, 502, f"variant {variant}: {exc}")
            return
        out = [(k, v) for k, v in response.headers if k not in _DROP_RESPONSE]
        out.append((VARIANT_HEADER, variant.encode()))
        await self._respond(send, response.status, response.body, out)
        self._child(self.metrics.requests, variant, str(response.status)).inc()
        self._child(self.metrics.latency, variant).observe(time.perf_counter() - started)

    def _mirror(self, state: RouterState, name: str, method: str, target: str,
                headers: list[tuple[bytes, bytes]], body: bytes) -> None:  # fmt: skip
        endpoint = state.targets[name].pick()
        if endpoint is None or self.mirror_in_flight >= self.settings.mirror_max_in_flight:
            self._child(self.metrics.mirror, "dropped").inc()
            return
        self.mirror_in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._send_mirror(endpoint, method, target, headers, body)
        )
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)

    async def _send_mirror(self, endpoint: tuple[str, int], method: str, target: str,
                           headers: list[tuple[bytes, bytes]], body: bytes) -> None:  # fmt: skip
        try:
            response = await self.pool.request(endpoint[0], endpoint[1], method, target,
                                               headers, body)  # fmt: skip
            self._child(self.metrics.mirror, "ok" if response.status < 400 else "error").inc()
        except Exception:  # noqa: BLE001 - a mirror failure never reaches the client
            self._child(self.metrics.mirror, "error").inc()
        finally:
            self.mirror_in_flight -= 1


_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding",
                            b"date", b"server"})  # fmt: skip


def create_router(settings: RouterSettings | None = None, **kwargs: Any) -> Router:
    """Build the router ASGI app from settings (env ``MLOPS_ROUTER_*``)."""
    return Router(settings or RouterSettings(), **kwargs)
