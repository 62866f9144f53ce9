"""Pod status: phase (kubelet's getPhase), conditions, container statuses."""

from __future__ import annotations

import pytest

from mlops_localstack.node.status import (
    ConditionInputs,
    ContainerView,
    Terminated,
    comparable,
    compute_phase,
    container_status,
    desired_conditions,
    merge_conditions,
    readiness_gates_false,
)

RUNNING = {"state": {"running": {"startedAt": "t"}}}
WAITING = {"state": {"waiting": {"reason": "ContainerCreating"}}}
OK = {"state": {"terminated": {"exitCode": 0}}}
FAIL = {"state": {"terminated": {"exitCode": 3}}}
RESTARTING_AFTER_FAIL = {"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                         "lastState": {"terminated": {"exitCode": 1}}}


@pytest.mark.parametrize(
    ("policy", "statuses", "phase"),
    [
        ("Never", [WAITING], "Pending"),
        ("Never", [RUNNING], "Running"),
        ("Never", [OK], "Succeeded"),
        ("Never", [FAIL], "Failed"),
        ("Never", [OK, FAIL], "Failed"),
        ("Never", [RUNNING, FAIL], "Running"),
        ("Never", [RUNNING, WAITING], "Pending"),
        ("OnFailure", [OK], "Succeeded"),
        ("OnFailure", [RESTARTING_AFTER_FAIL], "Running"),
        ("Always", [OK], "Running"),
        ("Always", [RESTARTING_AFTER_FAIL], "Running"),
        ("Always", [], "Pending"),
    ],
)
def test_phase(policy: str, statuses: list[dict], phase: str) -> None:
    assert compute_phase(policy, [], statuses) == phase


def test_phase_with_init_containers() -> None:
    assert compute_phase("Never", [RUNNING], [WAITING]) == "Pending"
    assert compute_phase("Never", [FAIL], [WAITING]) == "Failed"
    assert compute_phase("OnFailure", [RESTARTING_AFTER_FAIL], [WAITING]) == "Pending"
    assert compute_phase("Never", [OK], [RUNNING]) == "Running"


def test_container_status_shapes() -> None:
    running = ContainerView(name="main", image="img:1", state="running", started_at=0,
                            ready=True, started=True, restart_count=2, container_id="local://42",
                            last_terminated=Terminated(exit_code=1, reason="Error", message="boom",
                                                       started_at=0, finished_at=1))
    st = container_status(running)
    assert st["state"] == {"running": {"startedAt": "1970-01-01T00:00:00Z"}}
    assert st["lastState"]["terminated"]["exitCode"] == 1
    assert st["lastState"]["terminated"]["message"] == "boom"
    assert st["containerID"] == "local://42"
    assert st["imageID"] == "local://img:1"
    assert (st["ready"], st["started"], st["restartCount"]) == (True, True, 2)

    killed = ContainerView(name="main", image="img", state="terminated", container_id="local://1",
                           terminated=Terminated(exit_code=137, reason="Error", signal=9,
                                                 finished_at=5))
    term = container_status(killed)["state"]["terminated"]
    assert (term["exitCode"], term["signal"], term["reason"]) == (137, 9, "Error")
    assert term["finishedAt"] == "1970-01-01T00:00:05Z"

    waiting = container_status(ContainerView(name="c", image="i", waiting_reason="CrashLoopBackOff",
                                              waiting_message="back-off"))
    assert waiting["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
    assert "containerID" not in waiting
    assert waiting["imageID"] == ""


def _by_type(conds: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conds}


def test_conditions_follow_readiness() -> None:
    ready = _by_type(desired_conditions(ConditionInputs(sandbox_ready=True, initialized=True,
                                                        phase="Running")))
    assert ready["Ready"]["status"] == ready["ContainersReady"]["status"] == "True"
    assert ready["PodScheduled"]["status"] == ready["Initialized"]["status"] == "True"

    unready = _by_type(desired_conditions(ConditionInputs(
        sandbox_ready=True, initialized=True, unready=["web"], phase="Running")))
    assert unready["Ready"]["status"] == "False"
    assert unready["Ready"]["reason"] == "ContainersNotReady"
    assert "[web]" in unready["ContainersReady"]["message"]

    gated = _by_type(desired_conditions(ConditionInputs(
        sandbox_ready=True, initialized=True, phase="Running", readiness_gates_false=["x/y"])))
    assert gated["ContainersReady"]["status"] == "True"
    assert gated["Ready"]["reason"] == "ReadinessGatesNotReady"

    done = _by_type(desired_conditions(ConditionInputs(sandbox_ready=True, initialized=True,
                                                       phase="Succeeded")))
    assert done["Ready"]["reason"] == "PodCompleted"
    assert done["PodReadyToStartContainers"]["status"] == "False"

    init = _by_type(desired_conditions(ConditionInputs(
        sandbox_ready=True, initialized=False, uninitialized=["setup"], phase="Pending")))
    assert init["Initialized"]["reason"] == "ContainersNotInitialized"
    assert "[setup]" in init["Initialized"]["message"]


def test_merge_keeps_transition_times_and_foreign_conditions() -> None:
    previous = [
        {"type": "Ready", "status": "False", "lastTransitionTime": "T0"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"},
        {"type": "DisruptionTarget", "status": "True", "lastTransitionTime": "T0"},
    ]
    desired = [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]
    merged = _by_type(merge_conditions(previous, desired, "T1"))
    assert merged["Ready"]["lastTransitionTime"] == "T1"  # changed
    assert merged["PodScheduled"]["lastTransitionTime"] == "T0"  # unchanged
    assert merged["DisruptionTarget"]["status"] == "True"  # not ours: kept


def test_readiness_gates() -> None:
    pod = {"spec": {"readinessGates": [{"conditionType": "a/b"}, {"conditionType": "c/d"}]},
           "status": {"conditions": [{"type": "a/b", "status": "True"}]}}
    assert readiness_gates_false(pod) == ["c/d"]


def test_comparable_ignores_timestamps_only() -> None:
    a = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                                             "lastTransitionTime": "T0"}]}
    b = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                                             "lastTransitionTime": "T9"}]}
    c = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False",
                                             "lastTransitionTime": "T9"}]}
    assert comparable(a) == comparable(b)
    assert comparable(a) != comparable(c)
