"""metrics.RequestTally exports what prometheus_client's Counter/Histogram would for the same
requests: same series, labels, values and bucket counts (only the ``_created`` times differ)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlops_runtime.metrics import LATENCY_BUCKETS, RuntimeMetrics

BASE = ["model", "version", "variant"]
#: (endpoint, code, seconds): bucket edges, every error kind, a disconnect, two endpoints
REQUESTS = [("infer", 200, 0.0004), ("infer", 200, 0.0005), ("infer", 200, 0.003),
            ("infer", 400, 0.001), ("infer", 404, 5.0), ("infer", 503, 0.002),
            ("infer", 500, 9.0), ("infer", 499, 0.1), ("predict", 200, 0.25),
            ("grpc_infer", 413, 0.0)]  # fmt: skip


def reference(labels: tuple[str, ...]) -> str:
    r = CollectorRegistry()
    requests = Counter("mlops_runtime_requests", "Requests by endpoint and status code",
                       [*BASE, "endpoint", "code"], registry=r)  # fmt: skip
    errors = Counter("mlops_runtime_errors", "Failed requests by endpoint and error kind",
                     [*BASE, "endpoint", "kind"], registry=r)  # fmt: skip
    disconnects = Counter(
        "mlops_runtime_client_disconnects", "Requests whose client left before sending the "
        "whole body (not answered, not counted as requests or errors)", [*BASE, "endpoint"],
        registry=r)  # fmt: skip
    latency = Histogram("mlops_runtime_request_duration_seconds", "Request latency in seconds",
                        [*BASE, "endpoint"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
    for endpoint, code, seconds in REQUESTS:
        if code == 499:
            disconnects.labels(*labels, endpoint).inc()
            continue
        requests.labels(*labels, endpoint, str(code)).inc()
        latency.labels(*labels, endpoint).observe(seconds)
        if code >= 400:
            kind = "client" if code < 500 else "unavailable" if code == 503 else "server"
            errors.labels(*labels, endpoint, kind).inc()
    return generate_latest(r).decode()


def samples(text: str) -> list[str]:
    """The request metrics' lines, ``_created`` values blanked, sorted."""
    keep = ("mlops_runtime_requests", "mlops_runtime_errors", "mlops_runtime_client_disconnects",
            "mlops_runtime_request_duration_seconds", "# HELP mlops_runtime_re",
            "# TYPE mlops_runtime_re", "# HELP mlops_runtime_err", "# TYPE mlops_runtime_err",
            "# HELP mlops_runtime_client", "# TYPE mlops_runtime_client")  # fmt: skip
    return sorted(re.sub(r"(_created\{.*\}) \S+$", r"\1 T", line)
                  for line in text.splitlines() if line.startswith(keep))


def test_the_tally_exports_what_prometheus_client_would() -> None:
    metrics = RuntimeMetrics("champion")
    metrics.set_model("iris", "3")
    for endpoint, code, seconds in REQUESTS:
        metrics.observe_request(endpoint, code, seconds)
    ours = samples(generate_latest(metrics.registry).decode())
    assert ours == samples(reference(("iris", "3", "champion")))
    assert any('le="0.0005"' in line and line.endswith(" 2.0") for line in ours)  # edge: <=


def test_counts_before_a_model_change_keep_their_labels() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = RuntimeMetrics("champion")
    metrics.observe_request("infer", 503, 0.001)  # while loading: no model labels yet
    metrics.set_model("iris", "3")
    metrics.observe_request("infer", 200, 0.001)
    counts = {(s.labels["model"], s.labels["version"], s.labels["code"]): s.value
              for family in text_string_to_metric_families(
                  generate_latest(metrics.registry).decode())
              for s in family.samples if s.name == "mlops_runtime_requests_total"}
    assert counts == {("", "", "503"): 1.0, ("iris", "3", "200"): 1.0}
