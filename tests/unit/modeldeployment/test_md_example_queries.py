"""The example's analysis queries, evaluated by Prometheus' own engine on the runtime's series.

The series come from the real ``RuntimeMetrics`` (its exposition text after each simulated
scrape), labelled the way Prometheus stores them (``namespace`` added from the pod); the
queries are the example's, placeholders substituted as the controller does; ``promtool test
rules`` evaluates them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_md_builders import EXAMPLE

from mlops_operator.analysis import render
from mlops_runtime.metrics import RuntimeMetrics

PROMTOOL = shutil.which("promtool")
STEPS = 10  # scrapes, 15 s apart
PLACEHOLDERS = {"namespace": "ml", "deployment": "iris", "variant": "champion", "version": "4"}


def example_queries() -> dict[str, str]:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    return {m["name"]: m["query"] for m in spec["rollout"]["analysis"]["metrics"]}


def substitute(query: str, values: dict[str, str] = PLACEHOLDERS) -> str:
    return render(query, values)


def exported_series(metrics: RuntimeMetrics) -> dict[str, float]:
    """``name{labels}`` → value, as Prometheus would store the scrape (plus ``namespace``)."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = {**s.labels, "namespace": "ml", "deployment": "iris"}
            text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{s.name}{{{text}}}"] = s.value
    return out


Traffic = Callable[[RuntimeMetrics], None]


def scrape_history(pods: list[tuple[str, str, Traffic]]) -> list[dict[str, Any]]:
    """promtool input series: each pod ``(variant, version, traffic per step)`` scraped STEPS
    times (a series appears at the first scrape that exposes it, as in Prometheus)."""
    history: dict[str, list[str]] = {}
    for variant, version, traffic in pods:
        metrics = RuntimeMetrics(variant)
        metrics.set_model("iris", version)
        for step in range(STEPS + 1):
            for key, value in exported_series(metrics).items():
                history.setdefault(key, ["_"] * step).append(repr(value))
            traffic(metrics)
    return [{"series": k, "values": " ".join(v)} for k, v in history.items()]


def requests(ok: int, failed: int, seconds: float) -> Traffic:
    def run(metrics: RuntimeMetrics) -> None:
        for _ in range(ok):
            metrics.observe_request("infer", 200, seconds)
        for _ in range(failed):
            metrics.observe_request("infer", 500, seconds)

    return run


def idle(metrics: RuntimeMetrics) -> None:
    pass


def evaluate(tmp_path: Path, series: list[dict[str, Any]], exprs: dict[str, list]) -> None:
    """Fail unless each expression gives exactly the expected samples at the last scrape."""
    doc = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": f"{STEPS * 15}s", "exp_samples": samples}
                    for expr, samples in exprs.items()
                ],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )  # type: ignore[list-item]
    assert done.returncode == 0, done.stdout + done.stderr


def value(v: float) -> list[dict[str, Any]]:
    return [{"labels": "{}", "value": v}]


NO_DATA: list[dict[str, Any]] = []
ERRORS = "round(1000 * ({q}))"  # per mille: exact, whatever the float rounding
LATENCY_OK = "({q}) <= bool 0.25"  # the example's successCondition, as 1 or 0


def test_the_queries_name_only_series_the_runtime_exports() -> None:
    metrics = RuntimeMetrics("champion")
    metrics.set_model("iris", "4")
    requests(1, 1, 0.01)(metrics)
    exported = {key.split("{")[0] for key in exported_series(metrics)}
    for name, query in example_queries().items():
        used = set(re.findall(r"\bmlops_runtime_\w+", query))
        assert used, name
        assert used <= exported, f"{name}: {used - exported} not exported"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
@pytest.mark.parametrize(
    ("canary", "stable", "error_rate", "latency_ok"),
    [
        # 54 good + 6 failed per scrape on the canary (version 4): 10 % errors, fast
        (requests(54, 6, 0.01), requests(60, 0, 0.01), value(100), value(1)),
        # no failure at all: the error series does not exist, the rate is 0, not "no data"
        (requests(60, 0, 0.01), requests(0, 60, 2.0), value(0), value(1)),
        # slow canary: latency condition false; a stable version's errors do not count
        (requests(60, 0, 0.4), requests(0, 60, 0.01), value(0), value(0)),
        # no traffic at all: no data (inconclusive), never a success
        (idle, requests(60, 0, 0.01), NO_DATA, NO_DATA),
    ],
    ids=["errors", "clean", "slow", "idle"],
)
def test_example_queries_measure_the_canary(
    tmp_path: Path,
    canary: Traffic,
    stable: Traffic,
    error_rate: list[dict[str, Any]],
    latency_ok: list[dict[str, Any]],
) -> None:
    series = scrape_history([("champion", "4", canary), ("champion", "3", stable)])
    queries = {k: substitute(q) for k, q in example_queries().items()}
    evaluate(
        tmp_path,
        series,
        {
            ERRORS.format(q=queries["error-rate"]): error_rate,
            LATENCY_OK.format(q=queries["p95-latency"]): latency_ok,
        },
    )
