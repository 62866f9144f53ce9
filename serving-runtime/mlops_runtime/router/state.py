"""The router's live state: the config, the traffic splitter, the endpoints, the config source."""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlops_runtime.router.config import RouterConfig, Upstream
from mlops_runtime.router.discovery import read_configmap
from mlops_runtime.router.hashing import SmoothWeightedRoundRobin, sticky_choice
from mlops_runtime.router.settings import RouterSettings


@dataclass(slots=True)
class Targets:
    """The endpoints of one upstream, a round-robin cursor over them, and the endpoints ejected
    from the rotation for a while (outlier ejection, as Envoy does it): one that refused a
    connection or answered "not ready" (503) is skipped until ``ejected`` says otherwise, so a
    pod that died or restarts stops getting requests before discovery notices it."""

    urls: list[tuple[str, int]] = field(default_factory=list)
    cursor: Any = None
    ejected: dict[tuple[str, int], float] = field(default_factory=dict)

    def set(self, urls: list[str]) -> None:
        parsed = []
        for url in urls:
            parts = urlsplit(url)
            if parts.hostname and parts.port:
                parsed.append((parts.hostname, parts.port))
        if parsed != self.urls:
            self.urls = parsed
            self.cursor = itertools.cycle(parsed) if parsed else None
            # an endpoint that left discovery and came back (ready again) starts afresh
            self.ejected = {e: t for e, t in self.ejected.items() if e in parsed}

    def eject(self, endpoint: tuple[str, int], seconds: float) -> None:
        """Keep ``endpoint`` out of :meth:`pick` for ``seconds``."""
        if seconds > 0:
            self.ejected[endpoint] = time.monotonic() + seconds

    def pick(self) -> tuple[str, int] | None:
        """The next endpoint in rotation, skipping ejected ones; when every endpoint is ejected
        the next one regardless (Envoy's panic mode: better a try than no answer)."""
        if self.cursor is None:
            return None
        endpoint = next(self.cursor)
        if not self.ejected:
            return endpoint
        now = time.monotonic()
        for _ in range(len(self.urls)):
            until = self.ejected.get(endpoint)
            if until is None:
                return endpoint
            if until <= now:
                del self.ejected[endpoint]
                return endpoint
            endpoint = next(self.cursor)
        return endpoint


class RouterState:
    """The live config, the traffic splitter and the discovered endpoints."""

    def __init__(self, config: RouterConfig, namespace: str) -> None:
        self.namespace = namespace
        self.config = config
        self.targets: dict[str, Targets] = {}
        self.apply(config)

    def apply(self, config: RouterConfig) -> None:
        """Switch to a new config; endpoints of unchanged upstreams are kept."""
        self.config = config
        self.weights = config.weights
        self.splitter = SmoothWeightedRoundRobin(self.weights)
        upstreams = self.upstreams()
        self.targets = {u.name: self.targets.get(u.name, Targets()) for u in upstreams}
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

    def fallback(self, exclude: set[str]) -> str | None:
        """The heaviest variant outside ``exclude`` that has endpoints (None: there is none)."""
        ready = [v for v in self.config.variants
                 if v.name not in exclude and self.targets[v.name].urls]
        return max(ready, key=lambda v: v.weight).name if ready else None

    def sticky_key(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The value of the configured sticky header in ``headers``, if any."""
        if not self.config.sticky_header:
            return None
        wanted = self.config.sticky_header.encode()
        for name, value in headers:
            if name == wanted:
                return value.decode("latin-1")
        return None

    def ready(self) -> bool:
        """Every variant with a positive weight has at least one endpoint."""
        return all(self.targets[v.name].urls for v in self.config.variants if v.weight > 0)

    def status(self) -> dict[str, Any]:
        """What ``/router/status`` shows."""
        config = self.config
        return {
            "ready": self.ready(),
            "weights": self.weights,
            "stickyHeader": config.sticky_header,
            "mirror": config.mirror.name if config.mirror else None,
            "endpoints": {n: [f"http://{h}:{p}" for h, p in t.urls]
                          for n, t in self.targets.items()},  # fmt: skip
        }


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
