"""HA: while kopf peering pauses a replica, its work queue runs no pass — not even the passes
already queued or due from a timer — and it picks up where it was once kopf resumes it.

A peer of higher priority is what pauses a replica; ``kopf freeze`` (kopf's own command for
pausing operators) plays that peer here, for a stated lifetime. Also checked on the same run:
kopf's "Handler '…' succeeded." of the watches (every child event) is logged at DEBUG only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_localstack.cluster import Cluster, poll

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PEERING_CRDS = REPO / "charts" / "mlops-operator" / "files" / "kopf" / "peering-crds.yaml"
EXAMPLE = REPO / "examples" / "iris" / "trainingrun.yaml"
PEERING = "pause-test"
FREEZE_SECONDS = 15  # the higher-priority "peer" lives this long; 5 resync periods of 3 s


def test_a_paused_replica_runs_no_pass_until_resumed(
        cluster: Cluster, crds: Any, operator: Any, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev",
                    "--timeout=60s")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}))
    operator.restart(MLOPS_PEERING=PEERING, MLOPS_PEERING_PRIORITY="10")

    def peers() -> dict[str, Any]:
        obj = json.loads(cluster.kubectl("get", "kopfpeering", PEERING, "-n", namespace, "-o",
                                         "json").stdout)
        return {k: v for k, v in (obj.get("status") or {}).items() if v}

    poll("the operator in the peering", lambda: len(peers()) == 1, timeout=60, interval=0.5)
    # a TrainingRun whose Job never starts (no node here): a pass every resync (3 s)
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].pop("register", None)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    name = doc["metadata"]["name"]
    passes = re.compile(rf"TrainingRun {re.escape(namespace)}/{name}: pass at")

    def tr_status() -> dict[str, Any]:
        return json.loads(cluster.kubectl("get", "tr", name, "-n", namespace, "-o",
                                          "json").stdout).get("status") or {}

    poll("the Job", lambda: tr_status().get("jobName"), timeout=120, interval=0.5)
    poll("a few resync passes", lambda: len(passes.findall(operator.logs())) >= 4, timeout=60,
         interval=0.5)

    out = subprocess.run(
        [sys.executable, "-m", "kopf", "freeze", "-n", namespace, "--peering", PEERING,
         "--priority", "100", "--lifetime", str(FREEZE_SECONDS), "--id", "test-freezer"],
        env=cluster.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pause = "Pausing operations in favour of [<Peer test-freezer"
    poll("kopf to pause the operator", lambda: pause in operator.logs(), timeout=60,
         interval=0.25)

    def resumed() -> int:  # where kopf resumed after that pause (-1: not yet)
        logs = operator.logs()
        return logs.find("Resuming operations", logs.index(pause))

    poll("kopf to resume it when the frozen peer expires", lambda: resumed() >= 0,
         timeout=FREEZE_SECONDS + 60, interval=0.25)
    logs = operator.logs()
    paused = logs[logs.index(pause):resumed()]
    assert paused.count("\n") > 2  # the pause lasted (kopf's own lines in between)
    assert not passes.findall(paused), "passes ran while kopf paused this replica"
    # ... and the work goes on afterwards
    before = len(passes.findall(logs))
    poll("a pass after the resume", lambda: len(passes.findall(operator.logs())) > before,
         timeout=60, interval=0.5)

    # quiet watches: the successes of the event handlers (the Job's events among them) at DEBUG
    logs = operator.logs()
    assert "DEBUG kopf.objects: Handler 'TrainingRun-children' succeeded." in logs
    assert "DEBUG kopf.objects: Handler 'TrainingRun-events' succeeded." in logs
    assert not re.search(r"INFO kopf\.objects: Handler '\w+-(events|children)' succeeded", logs)
