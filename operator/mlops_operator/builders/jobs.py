"""Reading Jobs and their pods: outcome, why a pod waits, why it failed. Pure functions.

Shared by every controller that runs Jobs (training Jobs, validation Jobs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def job_outcome(job: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(phase, reason, message)`` of a Job: Succeeded/Failed once final, else Running/Pending.

    Only the final conditions count (``Complete``/``Failed``); the interim
    ``SuccessCriteriaMet``/``FailureTarget`` are followed by them once the pods are gone.
    """
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Succeeded", "JobComplete", cond.get("message") or "the Job completed"
        if cond.get("type") == "Failed":
            return "Failed", cond.get("reason") or "JobFailed", cond.get("message") or ""
    if (status.get("ready") or 0) > 0:
        return "Running", "JobRunning", "the pod is running"
    return "Pending", "JobPending", "waiting for the pod to start"


def failure_message(
    job_reason: str, job_message: str, pods: list[Mapping[str, Any]], tail_lines: int = 10,
    container: str = "train",
) -> tuple[str, int | None]:
    """A one-paragraph explanation of a failed Job and the failing container's exit code.

    Uses the most recently finished pod whose container terminated non-zero: its exit
    code, reason and the last lines of its termination message (the trainer's error, or the log
    tail with ``FallbackToLogsOnError``).
    """
    failed: list[tuple[str, dict[str, Any]]] = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
                "terminated"
            )
            if term and term.get("exitCode", 0) != 0:
                failed.append((term.get("finishedAt") or "", term))
    text = f"{job_reason}: {job_message}".rstrip(": ") if job_message else job_reason
    if not failed:
        return text, None
    _, term = max(failed, key=lambda item: item[0])
    code = term.get("exitCode")
    lines = [ln for ln in (term.get("message") or "").splitlines() if ln.strip()]
    detail = f"container {container!r} exited with code {code}"
    if term.get("reason"):
        detail += f" ({term['reason']})"
    if lines:
        detail += ": " + "\n".join(lines[-tail_lines:])
    return f"{text}; {detail}", code


def pending_reason(pods: list[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why a Job's pod is not running yet (unschedulable, image/config errors), if known."""
    for pod in pods:
        status = pod.get("status") or {}
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                return waiting["reason"], waiting.get("message") or waiting["reason"]
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return cond.get("reason") or "Unschedulable", cond.get("message") or ""
    return None


def pod_termination_message(pod: Mapping[str, Any]) -> str:
    """The termination message (or reason) of a pod's first terminated container."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = ((cs.get("state") or {}).get("terminated")) or (
            (cs.get("lastState") or {}).get("terminated")
        )
        if term:
            msg = (term.get("message") or "").strip()
            return msg or f"{term.get('reason', 'Error')} (exit code {term.get('exitCode')})"
    return ""
