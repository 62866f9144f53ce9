"""Operator metrics (prometheus-client): per-stage counters and duration histograms.

Stages: ``training``, ``validation``, ``promotion``, ``deployment``, ``retrain``; results such as
``success``, ``failure``, ``rejected``, ``error``. Together they draw the "pipeline stages:
success rate and average time" table (rate of ``*_total`` by result, ``*_sum / *_count``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

STAGES = ("training", "validation", "promotion", "deployment", "retrain")

STAGE_TOTAL = Counter(
    "mlops_stage_total",
    "Completed pipeline stage executions, by stage and result",
    ["stage", "result"],
)
STAGE_DURATION = Histogram(
    "mlops_stage_duration_seconds",
    "Wall-clock duration of pipeline stages, by stage and result",
    ["stage", "result"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
             7200, float("inf")),
)
RECONCILE_ERRORS = Counter(
    "mlops_reconcile_errors_total",
    "Reconcile pass errors, by resource kind and kind of error (temporary, permanent, "
    "forbidden: refused by the API server, apiserver: timed out, unreachable or 429/5xx, "
    "unexpected)",
    ["kind", "error"],
)


def observe_stage(stage: str, result: str, seconds: float) -> None:
    """Record one finished stage execution."""
    STAGE_TOTAL.labels(stage=stage, result=result).inc()
    STAGE_DURATION.labels(stage=stage, result=result).observe(max(0.0, seconds))


@contextmanager
def timed_stage(stage: str) -> Iterator[dict[str, str]]:
    """Time a block; the block sets ``outcome["result"]`` (default success, error on raise)."""
    outcome = {"result": "success"}
    start = time.monotonic()
    try:
        yield outcome
    except Exception:
        outcome["result"] = "error"
        raise
    finally:
        observe_stage(stage, outcome["result"], time.monotonic() - start)


def serve_metrics(port: int, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:
    """Expose /metrics on ``host:port`` from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)
