"""Prometheus metrics of the model server, labelled by model, version and variant."""

from __future__ import annotations

import bisect
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


class RequestTally(Collector):
    """Requests by status code, errors by kind, client disconnects and request latency, counted
    in plain ints and floats on the event loop and exported at scrape time.

    The same series as prometheus_client's ``Counter``/``Histogram`` (``_total``, ``_created``,
    cumulative ``_bucket``, ``_count``, ``_sum``) at a quarter of their cost per request
    (~0.5 µs against ~2 µs: no label lookup, no lock per value), which the serving benchmark's
    transport floor counts. Every request is observed on the event loop's thread; a scrape from
    another thread reads values that are at most one request apart from each other.
    """

    def __init__(self, base: list[str]) -> None:
        self.base = base
        #: (labels, endpoint, code) -> count
        self.codes: dict[tuple[tuple[str, ...], str, int], int] = {}
        #: (labels, endpoint) -> [count per bucket ... (+Inf last), sum]
        self.latency: dict[tuple[tuple[str, ...], str], list[float]] = {}
        self.disconnects: dict[tuple[tuple[str, ...], str], int] = {}
        self.created: dict[tuple[Any, ...], float] = {}

    def observe(self, labels: tuple[str, ...], endpoint: str, code: int, seconds: float) -> None:
        key = (labels, endpoint)
        if code == DISCONNECTED:
            self.disconnects[key] = self.disconnects.get(key, 0) + 1
            self.created.setdefault(("disconnects", key), time.time())
            return
        codes = self.codes
        count_key = (labels, endpoint, code)
        count = codes.get(count_key)
        if count is None:
            self.created[("codes", count_key)] = time.time()
            count = 0
        codes[count_key] = count + 1
        buckets = self.latency.get(key)
        if buckets is None:
            buckets = self.latency[key] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
            self.created[("latency", key)] = time.time()
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        buckets[-1] += seconds

    def collect(self) -> Iterator[Any]:
        created = self.created
        requests = CounterMetricFamily(
            "mlops_runtime_requests", "Requests by endpoint and status code",
            labels=[*self.base, "endpoint", "code"])  # fmt: skip
        errors = CounterMetricFamily(
            "mlops_runtime_errors", "Failed requests by endpoint and error kind",
            labels=[*self.base, "endpoint", "kind"])  # fmt: skip
        failed: dict[tuple[tuple[str, ...], str, str], list[float]] = {}
        for (labels, endpoint, code), count in list(self.codes.items()):
            first = created[("codes", (labels, endpoint, code))]
            requests.add_metric([*labels, endpoint, str(code)], count, created=first)
            if code >= 400:
                kind = "client" if code < 500 else "unavailable" if code == NOT_READY else "server"
                entry = failed.setdefault((labels, endpoint, kind), [0, first])
                entry[0] += count
                entry[1] = min(entry[1], first)
        for (labels, endpoint, kind), (count, first) in failed.items():
            errors.add_metric([*labels, endpoint, kind], count, created=first)
        disconnects = CounterMetricFamily(
            "mlops_runtime_client_disconnects", "Requests whose client left before sending "
            "the whole body (not answered, not counted as requests or errors)",
            labels=[*self.base, "endpoint"])  # fmt: skip
        for (labels, endpoint), count in list(self.disconnects.items()):
            disconnects.add_metric([*labels, endpoint], count,
                                   created=created[("disconnects", (labels, endpoint))])
        latency = HistogramMetricFamily(
            "mlops_runtime_request_duration_seconds", "Request latency in seconds",
            labels=[*self.base, "endpoint"])  # fmt: skip
        for (labels, endpoint), values in list(self.latency.items()):
            values = list(values)
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), values, strict=False):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric([*labels, endpoint], buckets, sum_value=values[-1])
            latency.samples.append(Sample(
                "mlops_runtime_request_duration_seconds_created",
                dict(zip([*self.base, "endpoint"], [*labels, endpoint], strict=True)),
                created[("latency", (labels, endpoint))]))  # fmt: skip
        yield from (requests, errors, disconnects, latency)


class RuntimeMetrics:
    """All runtime metrics in one registry of their own (one per app, so tests stay isolated)."""

    def __init__(self, variant: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.labels = {"model": "", "version": "", "variant": variant}
        base = ["model", "version", "variant"]
        r = self.registry
        self.tally = RequestTally(base)
        r.register(self.tally)
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
        self.tally_labels = tuple(self.labels.values())

    def set_model(self, model: str, version: str | None) -> None:
        """Fix the model and version labels once the model is known (gauges under the previous
        labels are removed so that no stale "not ready" series remains)."""
        old = tuple(self.labels.values())
        for gauge in (self.ready, self.load_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(*old)
        self.labels = {**self.labels, "model": model, "version": version or ""}
        self.tally_labels = tuple(self.labels.values())
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
        self.tally.observe(self.tally_labels, endpoint, code, seconds)

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
