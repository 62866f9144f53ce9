"""Validation gates of a ModelVersion, as pure functions (no I/O).

:func:`evaluate_gates` turns a :class:`~mlops_operator.api.ValidationSpec`, the candidate run's
metrics and the metrics of the versions holding the compared aliases into a list of
:class:`~mlops_operator.api.Check` — one per gate, each with the observed value, the threshold
and whether it passed. :func:`promotion_decision` is the concurrency rule that decides whether a
validated candidate may move an alias that changed hands while it was being validated.

Everything here is deterministic and unit-tested without MLflow or Kubernetes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .api import Check, MetricGate, SliceGate, ValidationSpec

#: MLflow limits a tag value to 5000 characters; stay below it.
TAG_VALUE_LIMIT = 5000


@dataclass(frozen=True)
class Baseline:
    """The version currently holding an alias, with the metrics of its run."""

    alias: str
    version: str
    run_id: str | None
    metrics: Mapping[str, float]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _better(value: float, other: float, direction: str) -> float:
    """How much ``value`` improves on ``other`` (positive = better) in ``direction``."""
    return value - other if direction == "HigherIsBetter" else other - value


def metric_gate_checks(
    gate: MetricGate,
    metrics: Mapping[str, float],
    run_id: str,
    baselines: Mapping[str, Baseline | None],
    candidate_version: str | None = None,
    force: bool = False,
) -> list[Check]:
    """The checks of one metric gate: ``min``, ``max`` and ``compareTo`` (in that order)."""
    value = metrics.get(gate.name)
    checks: list[Check] = []
    if value is None:
        return [
            Check(
                name=gate.name,
                passed=False,
                threshold=gate.min if gate.min is not None else gate.max,
                message=f"metric {gate.name} not found in run {run_id}",
            )
        ]
    bounds = (("min", gate.min, ">=", "<", value >= (gate.min or 0.0)),
              ("max", gate.max, "<=", ">", value <= (gate.max or 0.0)))
    for kind, threshold, holds, fails, ok in bounds:
        if threshold is None:
            continue
        checks.append(
            Check(
                name=f"{gate.name} {holds} {kind}",
                value=value,
                threshold=threshold,
                passed=ok,
                message=f"{gate.name} {_fmt(value)} {holds if ok else fails} {kind} "
                f"{_fmt(threshold)}",
            )
        )
    if gate.compare_to is not None:
        checks.append(
            compare_check(gate, value, baselines.get(gate.compare_to), candidate_version, force)
        )
    return checks


def compare_check(
    gate: MetricGate,
    value: float,
    baseline: Baseline | None,
    candidate_version: str | None = None,
    force: bool = False,
) -> Check:
    """The ``compareTo`` check: beat the alias holder by ``minImprovement`` in ``direction``.

    Passes (and says why) when nobody holds the alias, when the candidate already holds it,
    when ``force`` is set (rollback), or when the holder's run never logged the metric.
    """
    alias = gate.compare_to or "champion"
    name = f"{gate.name} vs {alias}"
    if force:
        return Check(name=name, value=value, passed=True,
                     message=f"comparison with {alias} skipped: promote.force is set")
    if baseline is None:
        return Check(name=name, value=value, passed=True,
                     message=f"no {alias} yet: comparison passes")
    if candidate_version is not None and baseline.version == candidate_version:
        return Check(name=name, value=value, passed=True,
                     message=f"this version already holds {alias}")
    other = baseline.metrics.get(gate.name)
    if other is None:
        return Check(
            name=name, value=value, passed=True,
            message=f"{alias} v{baseline.version} has no metric {gate.name} "
            f"(run {baseline.run_id}): comparison passes",
        )
    sign = 1 if gate.direction == "HigherIsBetter" else -1
    threshold = other + sign * gate.min_improvement
    improvement = _better(value, other, gate.direction)
    # strictly better when no improvement is required, else at least minImprovement
    ok = improvement > 0 if gate.min_improvement <= 0 else improvement >= gate.min_improvement - 1e-12
    word = "higher" if gate.direction == "HigherIsBetter" else "lower"
    return Check(
        name=name,
        value=value,
        threshold=threshold,
        passed=ok,
        message=(
            f"{gate.name} {_fmt(value)} vs {alias} v{baseline.version} {_fmt(other)}: "
            f"improvement {_fmt(improvement)} ({word} is better), "
            f"required {'> 0' if gate.min_improvement <= 0 else _fmt(gate.min_improvement)}"
        ),
    )


def slice_values(gate: SliceGate, metrics: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """The slice metrics of ``gate`` found in ``metrics``, and the listed ones that are missing."""
    if gate.prefix is not None:
        found = {k: v for k, v in sorted(metrics.items()) if k.startswith(gate.prefix)}
        return found, []
    names = list(gate.metrics or [])
    return {n: metrics[n] for n in names if n in metrics}, [n for n in names if n not in metrics]


def slice_gate_checks(gate: SliceGate, metrics: Mapping[str, float], run_id: str) -> list[Check]:
    """The checks of one slice gate: ``<name> floor`` (worst slice) and ``<name> gap``."""
    found, missing = slice_values(gate, metrics)
    if missing:
        return [Check(name=gate.name, passed=False,
                      message=f"metric {', '.join(missing)} not found in run {run_id}")]
    if not found:
        return [Check(name=gate.name, passed=False,
                      message=f"no metric with prefix {gate.prefix} found in run {run_id}")]
    worst_name = min(found, key=lambda k: (found[k], k))
    best_name = max(found, key=lambda k: (found[k], k))
    worst, best = found[worst_name], found[best_name]
    checks: list[Check] = []
    if gate.floor is not None:
        ok = worst >= gate.floor
        below = sorted(k for k, v in found.items() if v < gate.floor)
        checks.append(Check(
            name=f"{gate.name} floor",
            value=worst,
            threshold=gate.floor,
            passed=ok,
            message=(f"all {len(found)} slices >= {_fmt(gate.floor)} (worst {worst_name} "
                     f"{_fmt(worst)})" if ok else
                     f"slices below floor {_fmt(gate.floor)}: "
                     + ", ".join(f"{k}={_fmt(found[k])}" for k in below)),
        ))
    if gate.max_gap is not None:
        gap = best - worst
        ok = gap <= gate.max_gap + 1e-12
        checks.append(Check(
            name=f"{gate.name} gap",
            value=gap,
            threshold=gate.max_gap,
            passed=ok,
            message=(f"gap {_fmt(gap)} between {best_name} {_fmt(best)} and {worst_name} "
                     f"{_fmt(worst)} {'<=' if ok else '>'} maxGap {_fmt(gate.max_gap)}"),
        ))
    return checks


def evaluate_gates(
    validation: ValidationSpec | None,
    run_metrics: Mapping[str, float],
    baselines: Mapping[str, Baseline | None] | None = None,
    *,
    run_id: str = "?",
    candidate_version: str | None = None,
    force: bool = False,
) -> list[Check]:
    """Evaluate every gate of ``validation`` against the candidate's run metrics.

    ``baselines`` maps each alias named by a ``compareTo`` to the version holding it (``None``
    or absent: nobody holds it). A missing metric is a failed check, never an exception.
    """
    if validation is None:
        return []
    checks: list[Check] = []
    for gate in validation.metrics or []:
        checks.extend(metric_gate_checks(gate, run_metrics, run_id, baselines or {},
                                         candidate_version, force))
    for sgate in validation.slices or []:
        checks.extend(slice_gate_checks(sgate, run_metrics, run_id))
    return checks


def compared_aliases(validation: ValidationSpec | None) -> list[str]:
    """The aliases whose holders the gates compare with (deduplicated, in order)."""
    out: list[str] = []
    for gate in (validation.metrics or []) if validation else []:
        if gate.compare_to and gate.compare_to not in out:
            out.append(gate.compare_to)
    return out


def passed(checks: Sequence[Check]) -> bool:
    """True when every check passed (no gates: passed)."""
    return all(c.passed for c in checks)


def failure_summary(checks: Sequence[Check], limit: int = 900) -> str:
    """One line naming every failed check and why, for conditions, Events and tags."""
    text = "; ".join(c.message or c.name for c in checks if not c.passed)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checks_tag(checks: Sequence[Check], limit: int = TAG_VALUE_LIMIT) -> str:
    """Compact JSON of the checks for the ``mlops.dev/checks`` registry tag, within ``limit``.

    Messages are dropped first, then trailing passed checks, so failures survive truncation.
    """
    rows = [
        {"n": c.name, "v": c.value, "t": c.threshold, "p": c.passed, "m": c.message}
        for c in checks
    ]

    def dump(items: list[dict[str, object]]) -> str:
        return json.dumps(items, separators=(",", ":"), sort_keys=True)

    text = dump(rows)
    if len(text) <= limit:
        return text
    rows = [{k: v for k, v in r.items() if k != "m"} for r in rows]
    rows.sort(key=lambda r: bool(r["p"]))  # failures first
    while rows and len(dump(rows)) > limit:
        rows.pop()
    return dump(rows)


def primary_metric(validation: ValidationSpec | None) -> MetricGate | None:
    """The first metric gate: the PRIMARY column and the concurrency tie-breaker."""
    if validation and validation.metrics:
        return validation.metrics[0]
    return None


@dataclass(frozen=True)
class Contender:
    """A version competing for an alias: its number and its primary metric value."""

    version: str
    metric: float | None


def ranks_above(a: Contender, b: Contender, direction: str = "HigherIsBetter") -> bool:
    """The total order of the concurrency rule: better primary metric first, then higher
    version number. A missing metric ranks below any value."""
    if a.metric is not None and b.metric is not None and a.metric != b.metric:
        return _better(a.metric, b.metric, direction) > 0
    if (a.metric is None) != (b.metric is None):
        return a.metric is not None
    return int(a.version) > int(b.version)


@dataclass(frozen=True)
class Decision:
    """Whether to move the alias, and why (a CamelCase reason and a message)."""

    move: bool
    reason: str
    message: str


def promotion_decision(
    candidate: Contender,
    alias: str,
    holder: Contender | None,
    baseline_version: str | None,
    direction: str = "HigherIsBetter",
    force: bool = False,
) -> Decision:
    """The concurrency rule (see docs/validation.md), evaluated under the per-model lock.

    ``baseline_version`` is the version that held ``alias`` when the candidate's gates were
    evaluated; ``holder`` is the one holding it now. If nobody moved the alias in between, the
    gates already decided and the candidate moves it. If it changed hands (another candidate of
    the same model was promoted meanwhile), the candidate moves it only when it ranks above the
    new holder (:func:`ranks_above`): so among candidates validated at the same time the alias
    ends on the best one whatever order they finish in, and never moves back and forth.
    ``force`` (rollback) always moves it.
    """
    if holder is not None and holder.version == candidate.version:
        return Decision(False, "AlreadyHoldsAlias", f"v{candidate.version} already holds {alias}")
    if force:
        held = f"v{holder.version}" if holder else "nobody"
        return Decision(True, "Rollback",
                        f"forced: {alias} moves from {held} to v{candidate.version}")
    current = holder.version if holder else None
    if current == baseline_version:
        return Decision(True, "GatesPassed", f"{alias} moves to v{candidate.version}")
    if holder is None:
        return Decision(True, "AliasCleared",
                        f"{alias} was removed meanwhile; it moves to v{candidate.version}")
    if ranks_above(candidate, holder, direction):
        return Decision(
            True, "BeatsConcurrentCandidate",
            f"{alias} moved to v{holder.version} while v{candidate.version} was validated; "
            f"v{candidate.version} ranks above it and takes {alias}",
        )
    return Decision(
        False, "LostToConcurrentCandidate",
        f"{alias} moved to v{holder.version} while v{candidate.version} was validated, and "
        f"v{holder.version} ranks above v{candidate.version} (better primary metric, ties: "
        "higher version)",
    )
