"""Prometheus metrics of the model server, labelled by model, version and variant."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: The status of a request whose client disconnected before sending its body (as nginx logs it).
DISCONNECTED = 499
#: The status of a request answered "model not ready" (loading, or failed to load): nothing was
#: run, so it is counted as ``kind="unavailable"``, not as a ``server`` error of the model.
NOT_READY = 503


class _DriftCollector(Collector):
    """Exports PSI per feature, computed at scrape time so the hot path only copies rows."""

    def __init__(self, source: Callable[[], tuple[dict[str, str], dict[str, float]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels, scores = self._source()
        family = GaugeMetricFamily(
            "mlops_runtime_feature_drift_psi",
            "Population stability index of each feature over the sliding window vs the baseline",
            labels=[*labels, "feature"],
        )
        for feature, value in scores.items():
            family.add_metric([*labels.values(), feature], value)
        yield family


class RuntimeMetrics:
    """All runtime metrics in one registry of their own (one per app, so tests stay isolated)."""

    def __init__(self, variant: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.labels = {"model": "", "version": "", "variant": variant}
        base = ["model", "version", "variant"]
        r = self.registry
        self.requests = Counter(
            "mlops_runtime_requests", "Requests by endpoint and status code",
            [*base, "endpoint", "code"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "mlops_runtime_errors", "Failed requests by endpoint and error kind",
            [*base, "endpoint", "kind"], registry=r,
        )  # fmt: skip
        self.disconnects = Counter(
            "mlops_runtime_client_disconnects", "Requests whose client left before sending "
            "the whole body (not answered, not counted as requests or errors)",
            [*base, "endpoint"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "mlops_runtime_request_duration_seconds", "Request latency in seconds",
            [*base, "endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "mlops_runtime_predictions", "Predictions by predicted class",
            [*base, "class"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "mlops_runtime_batch_rows", "Rows per gathered predict call",
            base, buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.load_seconds = Gauge(
            "mlops_runtime_model_load_seconds", "Time taken to load the model", base, registry=r
        )
        self.ready = Gauge(
            "mlops_runtime_model_ready", "1 when the model is loaded", base, registry=r
        )
        self._drift_source: Callable[[], dict[str, float]] = dict
        r.register(_DriftCollector(lambda: (self.labels, self._drift_source())))
        self._children: dict[tuple[Any, ...], Any] = {}

    def set_model(self, model: str, version: str | None) -> None:
        """Fix the model and version labels once the model is known (gauges under the previous
        labels are removed so that no stale "not ready" series remains)."""
        old = tuple(self.labels.values())
        for gauge in (self.ready, self.load_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(*old)
        self.labels = {**self.labels, "model": model, "version": version or ""}
        self._children.clear()

    def set_drift_source(self, source: Callable[[], dict[str, float]]) -> None:
        """Where PSI scores come from (a :class:`~mlops_runtime.drift.DriftMonitor`)."""
        self._drift_source = source

    def _child(self, metric: Any, *extra: str) -> Any:
        key = (id(metric), *extra)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*self.labels.values(), *extra)
            self._children[key] = child
        return child

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one request and its latency; 4xx/5xx also count as errors (``client`` /
        ``server``; a 503, model not ready, as ``unavailable``). A client that left mid-body
        (499) counts only as a disconnect."""
        if code == DISCONNECTED:
            self._child(self.disconnects, endpoint).inc()
            return
        self._child(self.requests, endpoint, str(code)).inc()
        self._child(self.latency, endpoint).observe(seconds)
        if code >= 400:
            kind = "client" if code < 500 else "unavailable" if code == NOT_READY else "server"
            self._child(self.errors, endpoint, kind).inc()

    def observe_predictions(self, predictions: np.ndarray) -> None:
        """Count predictions per class (for classifiers: integer, bool or string labels)."""
        if predictions.ndim != 1 or predictions.dtype.kind not in "biuOUS":
            return
        values, counts = np.unique(predictions, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self._child(self.predictions, str(value)).inc(count)

    def observe_batch(self, rows: int) -> None:
        """Record the size of one gathered predict call."""
        self._child(self.batch_size).observe(rows)

    def set_loaded(self, ready: bool, seconds: float | None = None) -> None:
        """Record readiness and load time."""
        self._child(self.ready).set(1.0 if ready else 0.0)
        if seconds is not None:
            self._child(self.load_seconds).set(seconds)
