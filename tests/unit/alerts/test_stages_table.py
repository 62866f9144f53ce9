"""``mlops-operator stages``: the table from a metrics text, from Prometheus answers, and p50
interpolation as histogram_quantile does it."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlops_operator import stages
from mlops_operator.metrics import STAGE_DURATION

BUCKETS = STAGE_DURATION._upper_bounds  # the operator's own buckets


def _exposition() -> str:
    """A registry shaped like the operator's (same names, labels, buckets) with known data."""
    reg = CollectorRegistry()
    total = Counter("mlops_stage_total", "x", ["stage", "result"], registry=reg)
    hist = Histogram("mlops_stage_duration_seconds", "x", ["stage", "result"],
                     buckets=BUCKETS, registry=reg)
    for stage, result, seconds in [
        ("training", "success", 40), ("training", "success", 50), ("training", "success", 45),
        ("training", "failure", 3),
        ("validation", "success", 6), ("validation", "rejected", 8),
        ("retrain", "success", 0.2), ("retrain", "success", 0.4),
    ]:
        total.labels(stage, result).inc()
        hist.labels(stage, result).observe(seconds)
    return generate_latest(reg).decode()


def test_the_table_from_a_metrics_text() -> None:
    rows = {r.stage: r for r in stages.stage_rows(stages.samples_from_text(_exposition()))}
    assert list(rows) == ["training", "validation", "promotion", "deployment", "retrain"]
    t = rows["training"]
    assert (t.runs, t.successes, t.success_rate) == (4, 3, 0.75)
    assert t.avg == pytest.approx((40 + 50 + 45 + 3) / 4)
    # 4 observations: 3 in (30, 60], 1 in (2.5, 5]; the median rank 2 is in (30, 60]
    assert t.p50 == pytest.approx(30 + 30 * (2 - 1) / 3)
    assert rows["validation"].success_rate == 0.5
    assert rows["promotion"].runs == 0 and rows["promotion"].success_rate is None
    assert rows["retrain"].p50 == pytest.approx(0.5 * 1 / 2)  # rank 1 of 2, both in (0, 0.5]

    table = stages.format_table(rows.values())
    lines = table.splitlines()
    assert lines[0].split() == ["STAGE", "RUNS", "SUCCESS", "RATE", "P50", "/", "AVG",
                                "DURATION"]
    assert lines[1].split() == ["training", "4", "75.0%", "40.0s", "/", "34.5s"]
    assert lines[2].split() == ["validation", "2", "50.0%", "7.5s", "/", "7.0s"]
    assert lines[3].split() == ["promotion", "0", "-", "-", "/", "-"]
    assert lines[5].split() == ["retrain", "2", "100.0%", "250ms", "/", "300ms"]


def test_quantile_matches_histogram_quantile_edge_cases() -> None:
    inf = float("inf")
    assert stages._quantile(0.5, {}) is None
    assert stages._quantile(0.5, {1.0: 0, inf: 0}) is None
    assert stages._quantile(0.5, {1.0: 0, 2.0: 0, inf: 10}) == 2.0  # all in +Inf
    assert stages._quantile(0.5, {1.0: 10, inf: 10}) == pytest.approx(0.5)
    assert stages._quantile(0.9, {1.0: 5, 2.0: 10, inf: 10}) == pytest.approx(1.8)


def test_the_table_from_prometheus_answers() -> None:
    """Operator replicas are summed by Prometheus (sum by); the answers here are canned."""
    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        assert query.startswith("sum by (")
        assert "increase(" in query and "[1h]" in query
        vectors = {
            "total": [({"stage": "training", "result": "success"}, "9"),
                      ({"stage": "training", "result": "failure"}, "1")],
            "_sum": [({"stage": "training", "result": "success"}, "100")],
            "_count": [({"stage": "training", "result": "success"}, "10")],
            "_bucket": [({"stage": "training", "le": "5"}, "2"),
                        ({"stage": "training", "le": "10"}, "10"),
                        ({"stage": "training", "le": "+Inf"}, "10")],
        }
        key = next((k for k in ("_sum", "_count", "_bucket") if f"seconds{k}[" in query),
                   "total")
        result = [{"metric": m, "value": [0, v]} for m, v in vectors[key]]
        return httpx.Response(200, json={"status": "success",
                                         "data": {"resultType": "vector", "result": result}})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    rows = {r.stage: r for r in stages.stage_rows(
        stages.samples_from_prometheus("http://prom", window="1h", client=client))}
    t = rows["training"]
    assert (t.runs, t.success_rate, t.avg) == (10, 0.9, 10.0)
    assert t.p50 == pytest.approx(5 + 5 * (5 - 2) / 8)


def test_main_prints_the_table_from_an_operator_metrics_url(monkeypatch) -> None:  # noqa: ANN001
    text = _exposition()
    monkeypatch.setattr(stages.httpx, "get", lambda url, timeout: httpx.Response(
        200, text=text, request=httpx.Request("GET", url)))
    out = io.StringIO()
    assert stages.main("http://127.0.0.1:8081/metrics", out=out) == 0
    assert out.getvalue().splitlines()[1].startswith("training")
    out = io.StringIO()
    assert stages.main("http://127.0.0.1:8081/metrics", as_json=True, out=out) == 0
    assert json.loads(out.getvalue())[0] == {"stage": "training", "runs": 4, "successRate": 0.75,
                                             "p50Seconds": 40.0, "avgSeconds": 34.5}
    assert stages.main("http://127.0.0.1:8081/metrics", window="1h", out=io.StringIO()) == 1


def test_main_says_when_the_source_is_unreachable(capsys) -> None:  # noqa: ANN001
    from mlops_localstack.procs import free_port

    assert stages.main(f"http://127.0.0.1:{free_port()}") == 1
    assert "cannot read stage metrics" in capsys.readouterr().err


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0.25, "250ms"), (12.34, "12.3s"),
                                               (125, "2m05s"), (7380, "2h03m")])
def test_durations(seconds: float | None, text: str) -> None:
    assert stages.format_duration(seconds) == text
