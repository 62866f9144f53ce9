"""Pure functions: pod status the way the kubelet reports it.

Nothing here does I/O; the pod worker feeds in what it observed (container views, readiness,
restart policy) and gets back the dicts it writes to ``pods/status``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]

#: The pod condition types this node owns; others (DisruptionTarget, readiness gates...) are kept.
OWN_CONDITIONS = (
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def rfc3339(ts: float | None = None) -> str:
    """Seconds-precision RFC 3339 UTC timestamp (``metav1.Time``)."""
    when = dt.datetime.now(dt.UTC) if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(ts: float | None = None) -> str:
    """Microsecond-precision timestamp (``metav1.MicroTime``, e.g. a Lease's renewTime)."""
    when = dt.datetime.now(dt.UTC) if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Terminated:
    """A finished run of a container."""

    exit_code: int
    reason: str
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    container_id: str = ""
    signal: int | None = None

    def to_dict(self) -> JSON:
        out: JSON = {"exitCode": self.exit_code, "reason": self.reason}
        if self.signal:
            out["signal"] = self.signal
        if self.message:
            out["message"] = self.message
        if self.started_at is not None:
            out["startedAt"] = rfc3339(self.started_at)
        out["finishedAt"] = rfc3339(self.finished_at)
        if self.container_id:
            out["containerID"] = self.container_id
        return out


@dataclass
class ContainerView:
    """What the node knows about one container right now."""

    name: str
    image: str
    state: Literal["waiting", "running", "terminated"] = "waiting"
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    started_at: float | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    container_id: str = ""


def image_id(image: str) -> str:
    """A stable, obviously-local image ID (the image is recorded, never pulled)."""
    return f"local://{image}"


def container_status(view: ContainerView) -> JSON:
    """A ``containerStatuses[]`` entry."""
    if view.state == "running":
        state: JSON = {"running": {"startedAt": rfc3339(view.started_at)}}
    elif view.state == "terminated" and view.terminated is not None:
        state = {"terminated": view.terminated.to_dict()}
    else:
        waiting: JSON = {"reason": view.waiting_reason}
        if view.waiting_message:
            waiting["message"] = view.waiting_message
        state = {"waiting": waiting}
    out: JSON = {
        "name": view.name,
        "state": state,
        "lastState": (
            {"terminated": view.last_terminated.to_dict()} if view.last_terminated else {}
        ),
        "ready": view.ready,
        "restartCount": view.restart_count,
        "image": view.image,
        "imageID": image_id(view.image) if view.container_id else "",
        "started": view.started,
    }
    if view.container_id:
        out["containerID"] = view.container_id
    return out


def compute_phase(
    restart_policy: str,
    init_statuses: Sequence[JSON],
    statuses: Sequence[JSON],
    n_containers: int | None = None,
) -> str:
    """The pod phase from container statuses (a port of the kubelet's ``getPhase``).

    Waiting containers that have run before (``lastState.terminated``) count as stopped, so a
    crash-looping pod is Running under ``Always``/``OnFailure`` and Failed under ``Never``.
    """
    restart_policy = restart_policy or "Always"
    pending_init = failed_init = 0
    for st in init_statuses:
        state = st.get("state") or {}
        last = (st.get("lastState") or {}).get("terminated")
        if "terminated" in state:
            if state["terminated"].get("exitCode") == 0:
                continue
            failed_init += 1
        elif "waiting" in state and last and last.get("exitCode", 0) != 0:
            failed_init += 1
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Pending"

    running = waiting = stopped = succeeded = 0
    for st in statuses:
        state = st.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif (st.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if n_containers is not None:
        waiting += max(0, n_containers - len(statuses))
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


@dataclass
class ConditionInputs:
    """Observed facts the pod conditions are derived from."""

    sandbox_ready: bool
    initialized: bool
    uninitialized: list[str] = field(default_factory=list)
    unready: list[str] = field(default_factory=list)
    phase: str = "Pending"
    readiness_gates_false: list[str] = field(default_factory=list)


def desired_conditions(inputs: ConditionInputs) -> list[JSON]:
    """The node-owned pod conditions (without timestamps)."""
    terminal = inputs.phase in TERMINAL_PHASES
    conds: list[JSON] = [
        {"type": "PodReadyToStartContainers", "status": _b(inputs.sandbox_ready and not terminal)},
    ]
    if inputs.initialized:
        conds.append({"type": "Initialized", "status": "True"})
    else:
        conds.append({
            "type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
            "message": f"containers with incomplete status: [{' '.join(inputs.uninitialized)}]",
        })
    if terminal:
        containers_ready: JSON = {"type": "ContainersReady", "status": "False",
                                  "reason": "PodCompleted"}
        ready: JSON = {"type": "Ready", "status": "False", "reason": "PodCompleted"}
    elif inputs.unready or not inputs.initialized:
        msg = f"containers with unready status: [{' '.join(inputs.unready)}]"
        containers_ready = {"type": "ContainersReady", "status": "False",
                            "reason": "ContainersNotReady", "message": msg}
        ready = {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "message": msg}
    else:
        containers_ready = {"type": "ContainersReady", "status": "True"}
        if inputs.readiness_gates_false:
            gates = " ".join(inputs.readiness_gates_false)
            ready = {"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady",
                     "message": f"corresponding condition of pod readiness gate \"{gates}\" "
                                "does not exist or is not True."}
        else:
            ready = {"type": "Ready", "status": "True"}
    conds += [ready, containers_ready, {"type": "PodScheduled", "status": "True"}]
    return conds


def merge_conditions(
    previous: Iterable[JSON], desired: Iterable[JSON], now: str
) -> list[JSON]:
    """Keep foreign conditions; keep ``lastTransitionTime`` when a condition's status is unchanged."""
    prev = {c.get("type"): c for c in previous or []}
    out: list[JSON] = []
    seen: set[str] = set()
    for cond in desired:
        old = prev.get(cond["type"])
        merged = dict(cond)
        if old is not None and old.get("status") == cond["status"] and old.get("lastTransitionTime"):
            merged["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            merged["lastTransitionTime"] = now
        out.append(merged)
        seen.add(cond["type"])
    for ctype, cond in prev.items():
        if ctype not in seen and ctype not in OWN_CONDITIONS:
            out.append(cond)
    return out


def readiness_gates_false(pod: JSON) -> list[str]:
    """Readiness gate condition types that are not True on the pod."""
    conds = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
    gates = [(g or {}).get("conditionType", "") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    return [g for g in gates if g and conds.get(g) != "True"]


def _b(value: bool) -> str:
    return "True" if value else "False"


def comparable(status: JSON) -> JSON:
    """A status with volatile fields dropped, to decide whether an update is needed."""
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k not in ("lastTransitionTime", "lastProbeTime")}
        for c in status.get("conditions") or []
    ]
    return out
