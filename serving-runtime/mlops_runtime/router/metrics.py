"""The router's Prometheus metrics, per variant, in a registry of their own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlops_runtime.metrics import LATENCY_BUCKETS


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
        self.disconnects = Counter("mlops_router_client_disconnects",
                                   "Clients that left before sending the whole body "
                                   "(nothing forwarded; not in mlops_router_requests)",
                                   registry=r)  # fmt: skip
        self.errors = Counter("mlops_router_upstream_errors", "Upstream failures",
                              ["variant"], registry=r)  # fmt: skip
        self.ejections = Counter("mlops_router_endpoint_ejections",
                                 "Endpoints left out of the rotation for a while after they "
                                 "refused or reset a connection before answering "
                                 "(reason=unreached) or answered 503, not ready "
                                 "(reason=unavailable); the request went on to another "
                                 "endpoint or variant", ["variant", "reason"],
                                 registry=r)  # fmt: skip
        self.mirror = Counter("mlops_router_mirror_requests", "Mirrored copies by result",
                              ["result"], registry=r)  # fmt: skip
        self.weight = Gauge("mlops_router_variant_weight", "Configured weight", ["variant"],
                            registry=r)  # fmt: skip
        self.endpoints = Gauge("mlops_router_variant_endpoints", "Ready endpoints", ["variant"],
                               registry=r)  # fmt: skip
        self.reloads = Counter("mlops_router_config_reloads", "Config reloads by result",
                               ["result"], registry=r)  # fmt: skip
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (the lookup is costly on the hot path)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
