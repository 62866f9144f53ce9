"""How a ModelDeployment moves from the versions it serves to the versions it should serve.

Pure: the spec, what is served (``stable``), what should be (``desired``), the rollout status,
what the cluster reports and the latest measurements go in; the next state comes out. Argo
Rollouts' semantics are the reference:

* **Immediate** and **AB**: a variant's stable pods take the new version at once (a rolling
  update that keeps every old pod until a new one is ready). AB keeps the weights as written;
  promotion between variants is a human edit.
* **Canary**, one variant at a time: the new version gets its own pods; once they are ready
  the canary takes ``steps[i].weight`` percent of the variant's traffic; a step ends when its
  ``pause`` has passed and the latest analysis round (if any) was all Successful. An
  Inconclusive round never advances a step. More than ``failureLimit`` failed rounds abort:
  all traffic back to the stable pods, the canary removed, the version not retried until the
  desired version changes. After the last step, ``autoPromote`` makes the new version stable
  (state Promoting until the stable pods run it, then the canary goes); a newer version arriving
  mid-canary restarts from step 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .api.common import parse_duration
from .api.modeldeployment import ModelDeploymentSpec

ACTIVE = ("Progressing", "Promoting", "Paused")


def ts(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Decision:
    """The next state: stable versions, the rollout status, the canary to run, Events."""

    stable: dict[str, str]
    rollout: dict[str, Any] | None
    #: (variant, version, weight in percent of the variant's share) while a canary runs
    canary: tuple[str, str, int] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    aborted: tuple[str, str, str] | None = None  # (variant, version, why) when aborted now


def _new(variant: str, version: str, from_version: str) -> dict[str, Any]:
    return {"variant": variant, "version": version, "fromVersion": from_version, "step": 0,
            "weight": 0, "failures": 0, "state": "Progressing", "stepStarted": None,
            "lastAnalysis": None, "measurements": None,
            "message": f"canary of v{version} starting"}


def analysis_due(spec: ModelDeploymentSpec, ro: Mapping[str, Any] | None, now: dt.datetime) -> bool:
    """Whether the canary's analysis queries should run in this pass."""
    analysis = spec.rollout.analysis
    if analysis is None or not ro or ro.get("state") != "Progressing" or not ro.get("stepStarted"):
        return False
    last = parse_ts(ro.get("lastAnalysis"))
    return last is None or (now - last) >= parse_duration(analysis.interval)


def ab_analysis_due(spec: ModelDeploymentSpec, ro: Mapping[str, Any] | None,
                    now: dt.datetime) -> bool:
    """Strategy AB with analysis: whether the per-variant round is due (every interval)."""
    analysis = spec.rollout.analysis
    if spec.rollout.strategy != "AB" or analysis is None:
        return False
    last = parse_ts((ro or {}).get("lastAnalysis"))
    return last is None or (now - last) >= parse_duration(analysis.interval)


def next_wakeup(spec: ModelDeploymentSpec, ro: Mapping[str, Any] | None,
                now: dt.datetime) -> float | None:
    """Seconds until this rollout needs a pass without any event (None: events suffice)."""
    if spec.rollout.strategy == "AB" and spec.rollout.analysis is not None:
        last = parse_ts((ro or {}).get("lastAnalysis")) or now
        return max(0.5, (last + parse_duration(spec.rollout.analysis.interval) - now)
                   .total_seconds())
    if not ro or ro.get("state") != "Progressing" or not ro.get("stepStarted"):
        return None
    waits = []
    analysis = spec.rollout.analysis
    if analysis is not None:
        last = parse_ts(ro.get("lastAnalysis")) or now
        waits.append((last + parse_duration(analysis.interval) - now).total_seconds())
    steps = spec.rollout.steps or []
    step = int(ro.get("step") or 0)
    if step < len(steps) and steps[step].pause:
        started = parse_ts(ro.get("stepStarted")) or now
        waits.append((started + parse_duration(steps[step].pause) - now).total_seconds())
    return max(0.5, min(waits)) if waits else 0.5


def decide(
    spec: ModelDeploymentSpec,
    stable: Mapping[str, str | None],
    desired: Mapping[str, str | None],
    ro: Mapping[str, Any] | None,
    *,
    canary_ready: bool,
    stable_ready: Mapping[str, bool],
    measurements: Sequence[Mapping[str, Any]] | None,
    now: dt.datetime,
) -> Decision:
    """The next state (see the module docstring)."""
    names = [v.name for v in spec.variants]
    new_stable = {n: v for n in names if (v := stable.get(n) or desired.get(n)) is not None}
    d = Decision(stable=new_stable, rollout=dict(ro) if ro else None)
    changed = [n for n in names if desired.get(n) and stable.get(n)
               and desired[n] != stable[n]]
    if spec.rollout.strategy != "Canary":
        for n in changed:
            d.stable[n] = str(desired[n])
            d.events.append(("Normal", "RolloutStarted",
                             f"{n}: v{stable[n]} → v{desired[n]} ({spec.rollout.strategy})"))
        # AB keeps its latest per-variant analysis round (the controller runs it)
        keep = ("lastAnalysis", "measurements", "message")
        d.rollout = ({k: ro[k] for k in keep if k in ro} or None) if (
            ro and spec.rollout.strategy == "AB") else None
        return d
    ro_ = d.rollout
    if ro_ and ro_.get("variant") not in names:
        ro_ = d.rollout = None
    if ro_ and ro_.get("state") == "Aborted":
        n = ro_["variant"]
        if desired.get(n) == ro_.get("version"):
            return d  # not retried until the desired version changes
        ro_ = d.rollout = None
    if ro_ and ro_.get("state") in ACTIVE and ro_.get("state") != "Promoting":
        n = ro_["variant"]
        if desired.get(n) and desired[n] != ro_.get("version"):
            if desired[n] == d.stable.get(n):
                d.events.append(("Normal", "RolloutCancelled",
                                 f"{n}: v{ro_['version']} is no longer wanted; back to "
                                 f"v{desired[n]}"))
                ro_ = d.rollout = None
            else:
                d.events.append(("Normal", "RolloutRestarted",
                                 f"{n}: v{desired[n]} arrived during the canary of "
                                 f"v{ro_['version']}; restarting from step 0"))
                ro_ = d.rollout = _new(n, str(desired[n]), str(d.stable[n]))
    if not ro_ or ro_.get("state") not in ACTIVE:
        if not changed:
            return d
        n = changed[0]
        ro_ = d.rollout = _new(n, str(desired[n]), str(stable[n]))
        d.events.append(("Normal", "RolloutStarted",
                         f"{n}: canary of v{desired[n]} next to v{stable[n]}"))
    _advance(spec, d, ro_, canary_ready, stable_ready, measurements, now)
    return d


def _advance(spec: ModelDeploymentSpec, d: Decision, ro: dict[str, Any], canary_ready: bool,
             stable_ready: Mapping[str, bool], measurements: Sequence[Mapping[str, Any]] | None,
             now: dt.datetime) -> None:
    steps = spec.rollout.steps or []
    n, version = ro["variant"], str(ro["version"])
    if ro["state"] == "Promoting":
        d.stable[n] = version
        if stable_ready.get(n):
            d.events.append(("Normal", "RolloutPromoted", f"{n}: v{version} is stable"))
            d.rollout = None
            return
        d.canary = (n, version, int(ro.get("weight") or 0))
        ro["message"] = f"promoting: the stable pods of {n} roll to v{version}"
        return
    if ro["state"] == "Paused":
        d.canary = (n, version, int(ro.get("weight") or 0))
        return
    if not canary_ready:
        ro.update(weight=0, stepStarted=None, message=f"waiting for the canary pods of v{version}")
        d.canary = (n, version, 0)
        return
    step = int(ro.get("step") or 0)
    if not ro.get("stepStarted"):
        ro.update(stepStarted=ts(now), weight=steps[step].weight,
                  message=f"step {step + 1}/{len(steps)}: {steps[step].weight}%")
    if measurements is not None:
        ro.update(lastAnalysis=ts(now), measurements=list(measurements))
        failed = [m for m in measurements if m["verdict"] == "Failed"]
        if failed:
            ro["failures"] = int(ro.get("failures") or 0) + 1
        limit = spec.rollout.analysis.failure_limit if spec.rollout.analysis else 0
        if ro["failures"] > limit:
            why = "; ".join(f"{m['metric']}: {m.get('query', '')} = {m.get('value')}"
                            for m in failed)
            ro.update(state="Aborted", weight=0,
                      message=f"aborted at step {step + 1}: {ro['failures']} failed "
                      f"measurement(s) (failureLimit {limit}): {why}")
            d.aborted = (n, version, ro["message"])
            d.events.append(("Warning", "RolloutAborted", f"{n}: v{version} {ro['message']}"))
            return
        unknown = [m for m in measurements if m["verdict"] == "Inconclusive"]
        if unknown:
            ro["message"] = (f"step {step + 1}/{len(steps)}: analysis inconclusive ("
                             + ", ".join(f"{m['metric']}: {m.get('message') or 'no data'}"
                                         for m in unknown) + "); not advancing")
    d.canary = (n, version, int(ro["weight"]))
    if not _step_done(spec, ro, now):
        return
    if step + 1 < len(steps):
        ro.update(step=step + 1, stepStarted=ts(now), weight=steps[step + 1].weight,
                  message=f"step {step + 2}/{len(steps)}: {steps[step + 1].weight}%")
        d.canary = (n, version, int(ro["weight"]))
        d.events.append(("Normal", "RolloutStep", f"{n}: v{version} {ro['message']}"))
    elif spec.rollout.auto_promote:
        ro.update(state="Promoting", message=f"all {len(steps)} steps passed; promoting")
        d.stable[n] = version
        d.events.append(("Normal", "RolloutStepsPassed", f"{n}: v{version} {ro['message']}"))
    else:
        ro.update(state="Paused", message="all steps passed; autoPromote is false: set it, or "
                  "pin the variant's modelUri, to finish")


def _step_done(spec: ModelDeploymentSpec, ro: Mapping[str, Any], now: dt.datetime) -> bool:
    steps = spec.rollout.steps or []
    step = int(ro.get("step") or 0)
    started = parse_ts(ro.get("stepStarted")) or now
    if steps[step].pause and now - started < parse_duration(steps[step].pause):
        return False
    if spec.rollout.analysis is None:
        return True
    last = parse_ts(ro.get("lastAnalysis"))
    rounds = ro.get("measurements") or []
    return bool(last and last >= started and rounds
                and all(m["verdict"] == "Successful" for m in rounds))
