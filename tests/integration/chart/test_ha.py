"""HA: two operator pods with kopf peering; one works, the other waits; killing the active one
hands over; no work is done twice."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chart_stack import EXAMPLES, RELEASE_NS, ChartStack, kube_json

from mlops_localstack.cluster import poll

pytestmark = [pytest.mark.integration, pytest.mark.install]

PEERING = "mlops-ha"
LIFETIME = 10  # seconds a keep-alive is valid: the handover bound after a hard kill


@pytest.fixture(scope="module")
def ha(chart_stack: ChartStack) -> Iterator[ChartStack]:
    stack = chart_stack
    if stack.release_exists():
        stack.uninstall()
    # each replica draws a random peering priority (the operator's default: no tie); a short
    # keep-alive lifetime bounds the handover after a hard kill
    stack.install(*stack.values(replicaCount=2, peering=PEERING, extraEnv=[
        {"name": "MLOPS_PEERING_LIFETIME_SECONDS", "value": str(LIFETIME)}]), wait_ready=False)
    stack.wait_operator_ready(replicas=2)
    try:
        yield stack
    finally:
        if stack.release_exists():
            stack.uninstall()


def peers(stack: ChartStack) -> dict[str, Any]:
    obj = kube_json(stack, "get", "clusterkopfpeering", PEERING) or {}
    return {k: v for k, v in (obj.get("status") or {}).items() if v}


def paused(log: str) -> bool:
    """Whether kopf's last word on peering in this log is a pause."""
    # kopf: "Pausing operations in favour of ...", or, while priorities are still equal (the
    # first keep-alives), "Pausing all operators, including self"; then "Resuming operations"
    pause = max(log.rfind("Pausing operations"), log.rfind("Pausing all operators"))
    return pause > log.rfind("Resuming operations")


def training_run(stack: ChartStack, ns: str, name: str) -> None:
    doc = yaml.safe_load((EXAMPLES / "trainingrun.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"].pop("register")
    stack.cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))


def run_id(stack: ChartStack, ns: str, name: str) -> str | None:
    return ((kube_json(stack, "get", "tr", name, "-n", ns) or {}).get("status") or {}).get(
        "mlflowRunId")


def events(stack: ChartStack, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    out = stack.cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                                f"involvedObject.name={name},reason={reason}", "-o", "json")
    return json.loads(out.stdout)["items"]


def test_one_replica_works_and_a_kill_hands_over(ha: ChartStack) -> None:
    stack = ha
    poll("both replicas in the peering", lambda: len(peers(stack)) == 2, timeout=120, interval=1)
    pods = stack.ready_pods()
    # the peering identity is the pod's name (the chart sets POD_ID); the replica of the higher
    # priority works, the other is paused by kopf (silently when it started paused: kopf logs a
    # pause only when it turns one on)
    by_name = {p["metadata"]["name"]: p for p in pods}
    status = peers(stack)
    assert set(status) == set(by_name), (sorted(status), sorted(by_name))
    priorities = sorted(v["priority"] for v in status.values())
    assert priorities[0] != priorities[1], priorities
    top = max(status, key=lambda k: status[k]["priority"])
    active, standby = by_name[top], next(p for n, p in by_name.items() if n != top)
    assert not paused(stack.node.logs(RELEASE_NS, top))
    ns = stack.namespace("ha")
    training_run(stack, ns, "ha-1")
    poll("ha-1 reconciled by the active replica", lambda: run_id(stack, ns, "ha-1"),
         timeout=180, interval=0.5)
    assert "ha-1" not in stack.node.logs(RELEASE_NS, standby["metadata"]["name"])

    # kill the active replica's process hard (no goodbye in the peering object)
    pid = int(active["status"]["containerStatuses"][0]["containerID"].removeprefix("local://"))
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    training_run(stack, ns, "ha-2")
    rid = poll("ha-2 reconciled after the kill", lambda: run_id(stack, ns, "ha-2"),
               timeout=LIFETIME + 120, interval=0.25)
    handover = time.monotonic() - killed
    print(f"handover: {handover:.1f}s (peering lifetime {LIFETIME}s)")
    assert handover < LIFETIME + 60
    # no work duplicated: one MLflow run, one Job, one RunCreated event per TrainingRun
    poll("ha-2 to finish", lambda: ((kube_json(stack, "get", "tr", "ha-2", "-n", ns) or {})
                                    .get("status") or {}).get("phase") in ("Succeeded", "Failed"),
         timeout=300, interval=1)
    assert run_id(stack, ns, "ha-2") == rid
    for name in ("ha-1", "ha-2"):
        assert len(events(stack, ns, name, "RunCreated")) == 1
        jobs = json.loads(stack.cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)
        assert len([j for j in jobs["items"] if j["metadata"]["name"].startswith(name + "-")]) == 1
    from mlflow.tracking import MlflowClient

    from mlops_operator.mlflow_utils import TAG_UID

    client = MlflowClient(stack.tracking_uri)
    exp = client.get_experiment_by_name("iris")
    for name in ("ha-1", "ha-2"):
        uid = kube_json(stack, "get", "tr", name, "-n", ns)["metadata"]["uid"]
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_UID}` = '{uid}'")
        assert len(runs) == 1, f"{name}: {len(runs)} MLflow runs"
