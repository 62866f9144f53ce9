"""``mlops-operator stages``: the pipeline stage table from the operator's stage metrics.

Reads ``mlops_stage_total{stage,result}`` and the ``mlops_stage_duration_seconds`` histogram
(:mod:`mlops_operator.metrics`) either from Prometheus (a base URL: instant queries, summed over
operator replicas; ``window`` limits them to ``increase(...[window])``) or straight from an
operator's ``/metrics`` (a URL ending in ``/metrics``: since that process started), and prints::

    STAGE        RUNS  SUCCESS RATE  P50 / AVG DURATION
    training        4        75.0%       41.2s / 44.0s
    validation      3       100.0%        6.1s / 6.4s
    ...

``runs`` counts every result, ``success rate`` is ``result="success"`` over runs, ``p50`` is
interpolated from the histogram buckets as ``histogram_quantile`` does, ``avg`` is sum / count.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import httpx

from .metrics import STAGES

TOTAL = "mlops_stage_total"
DURATION = "mlops_stage_duration_seconds"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class StageRow:
    stage: str
    runs: float = 0.0
    successes: float = 0.0
    p50: float | None = None
    avg: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.runs if self.runs else None

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "runs": int(round(self.runs)),
                "successRate": self.success_rate, "p50Seconds": self.p50,
                "avgSeconds": self.avg}


def samples_from_text(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (an operator's ``/metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples]


def _queries(window: str | None) -> dict[str, str]:
    def agg(metric: str, by: str) -> str:
        inner = f"increase({metric}[{window}])" if window else metric
        return f"sum by ({by}) ({inner})"

    return {
        TOTAL: agg(TOTAL, "stage, result"),
        f"{DURATION}_sum": agg(f"{DURATION}_sum", "stage, result"),
        f"{DURATION}_count": agg(f"{DURATION}_count", "stage, result"),
        f"{DURATION}_bucket": agg(f"{DURATION}_bucket", "stage, le"),
    }


def samples_from_prometheus(url: str, window: str | None = None,
                            client: httpx.Client | None = None) -> list[Sample]:
    """The stage series from Prometheus' HTTP API (instant queries), as samples."""
    http = client or httpx.Client(timeout=10)
    out: list[Sample] = []
    try:
        for name, query in _queries(window).items():
            resp = http.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query})
            resp.raise_for_status()
            for item in resp.json()["data"]["result"]:
                out.append(Sample(name, dict(item["metric"]), float(item["value"][1])))
    finally:
        if client is None:
            http.close()
    return out


def _quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative ``{le: count}`` (linear within a bucket)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # in the +Inf bucket: the highest finite bound, like Prometheus
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def stage_rows(samples: Iterable[Sample]) -> list[StageRow]:
    """One row per stage (the known stages first, in pipeline order, then any others)."""
    rows: dict[str, StageRow] = {s: StageRow(s) for s in STAGES}
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for s in samples:
        stage = s.labels.get("stage")
        if not stage or math.isnan(s.value):
            continue
        row = rows.setdefault(stage, StageRow(stage))
        if s.name == TOTAL:
            row.runs += s.value
            if s.labels.get("result") == "success":
                row.successes += s.value
        elif s.name == f"{DURATION}_sum":
            sums[stage] += s.value
        elif s.name == f"{DURATION}_count":
            counts[stage] += s.value
        elif s.name == f"{DURATION}_bucket" and "le" in s.labels:
            buckets[stage][float(s.labels["le"])] += s.value
    for stage, row in rows.items():
        if counts[stage] > 0:
            row.avg = sums[stage] / counts[stage]
        row.p50 = _quantile(0.5, buckets.get(stage, {}))
    return list(rows.values())


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(round(seconds % 60)):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def format_table(rows: Iterable[StageRow]) -> str:
    """The table, aligned, one line per stage."""
    lines = [("STAGE", "RUNS", "SUCCESS RATE", "P50 / AVG DURATION")]
    for r in rows:
        rate = "-" if r.success_rate is None else f"{r.success_rate * 100:.1f}%"
        lines.append((r.stage, str(int(round(r.runs))), rate,
                      f"{format_duration(r.p50)} / {format_duration(r.avg)}"))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}".rstrip()
        for a, b, c, d in lines) + "\n"


def fetch(url: str, window: str | None = None) -> list[Sample]:
    """Samples from an operator's ``/metrics`` (a URL ending in /metrics) or from Prometheus."""
    if url.rstrip("/").endswith("/metrics"):
        if window:
            raise ValueError("--window needs Prometheus (an operator's /metrics has no history)")
        resp = httpx.get(url, timeout=10)
        resp.raise_for_status()
        return samples_from_text(resp.text)
    return samples_from_prometheus(url, window)


def main(url: str | None = None, window: str | None = None, as_json: bool = False,
         out: IO[str] | None = None) -> int:
    """The ``stages`` command: print the table (or JSON); 1 with a message when unreachable."""
    out = out or sys.stdout
    if url is None:
        from .settings import get_settings

        url = get_settings().prometheus_url
    try:
        rows = stage_rows(fetch(url, window))
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"error: cannot read stage metrics from {url}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        out.write(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    else:
        out.write(format_table(rows))
    return 0
