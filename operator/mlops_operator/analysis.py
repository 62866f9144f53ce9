"""Canary analysis: PromQL queries against Prometheus' HTTP API, judged by their conditions.

A measurement is one query at one time. Its verdict is ``Successful`` (the success condition
holds, or there is only a failure condition and it does not), ``Failed`` (the failure condition
holds, or the success condition does not) or ``Inconclusive``: the query returned no data, or
Prometheus could not be asked. **No data is never success** — a canary that gets no traffic
must not be promoted by default (Flagger's known pitfall).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from .api.modeldeployment import AnalysisMetric

Verdict = Literal["Successful", "Failed", "Inconclusive"]
_CONDITION = re.compile(r"^result *(<=|>=|==|!=|<|>) *(-?[0-9]+(?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?)$")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}


class QueryError(Exception):
    """Prometheus rejected the query (bad PromQL): a user error, reported as such."""


class PrometheusUnavailable(Exception):
    """Prometheus did not answer (down, timeout, 5xx): the measurement is inconclusive."""


def holds(condition: str, result: float) -> bool:
    """Evaluate ``result <op> number`` (the CRD's pattern) for ``result``."""
    match = _CONDITION.fullmatch(condition.strip())
    if match is None:
        raise ValueError(f"not a condition: {condition!r}")
    return bool(_OPS[match.group(1)](result, float(match.group(2))))


def judge(metric: AnalysisMetric, result: float | None) -> Verdict:
    """The verdict of one measurement (``None``: no data)."""
    if result is None or math.isnan(result):
        return "Inconclusive"
    if metric.failure_condition and holds(metric.failure_condition, result):
        return "Failed"
    if metric.success_condition:
        return "Successful" if holds(metric.success_condition, result) else "Failed"
    return "Successful"


def render(query: str, values: Mapping[str, str]) -> str:
    """Substitute ``{{namespace}}``, ``{{deployment}}``, ``{{variant}}``, ``{{version}}``."""
    def sub(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", sub, query)


def scalar(data: Mapping[str, object]) -> float | None:
    """One number from a Prometheus ``data`` object; None when the result is empty.

    A vector must have exactly one sample (aggregate in the query otherwise).
    """
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return float(result[1])
    if kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise QueryError(f"the query returned {len(result)} series; aggregate it to one "
                             "number (e.g. sum(...))")
        return float(result[0]["value"][1])
    raise QueryError(f"the query returned a {kind}, not one number")


@dataclass(frozen=True)
class Measurement:
    metric: str
    query: str
    value: float | None
    verdict: Verdict
    message: str = ""


def query(address: str, promql: str, timeout: float = 5.0) -> float | None:
    """Run an instant query; its one number, or None for no data."""
    try:
        resp = httpx.post(f"{address.rstrip('/')}/api/v1/query", data={"query": promql},
                          timeout=timeout)
    except httpx.HTTPError as exc:
        raise PrometheusUnavailable(f"Prometheus at {address} did not answer: {exc}") from exc
    if resp.status_code >= 500 or resp.status_code == 429:
        raise PrometheusUnavailable(f"Prometheus at {address} answered {resp.status_code}")
    try:
        body = resp.json()
    except ValueError as exc:
        raise PrometheusUnavailable(f"Prometheus at {address} answered no JSON") from exc
    if body.get("status") != "success":
        raise QueryError(f"{body.get('errorType', 'error')}: {body.get('error', resp.text)}")
    return scalar(body.get("data") or {})


def measure(address: str, metric: AnalysisMetric, values: Mapping[str, str],
            timeout: float = 5.0) -> Measurement:
    """Query and judge one analysis metric (Prometheus down → Inconclusive, said so)."""
    promql = render(metric.query, values)
    try:
        value = query(address, promql, timeout)
    except PrometheusUnavailable as exc:
        return Measurement(metric.name, promql, None, "Inconclusive", str(exc))
    verdict = judge(metric, value)
    message = "no data" if value is None else f"result {value:g}"
    return Measurement(metric.name, promql, value, verdict, message)
