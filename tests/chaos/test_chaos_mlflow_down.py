"""MLflow killed and kept down (``--chaos-mlflow-down`` seconds; 60 in the long run) while
TrainingRuns are in flight, and more TrainingRuns applied during the outage.

While it is down: the new TrainingRuns say MLflow is unreachable and get no Job (no Job ever
exists before its MLflow run). After it returns (same backend store): every TrainingRun
finishes with exactly one Job, run, registered version and ModelVersion; the runs from before
the outage are the same runs. Recovery times printed, never asserted.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from chaoshelpers import (
    MV_TERMINAL,
    TERMINAL,
    Kube,
    chaos_setting,
    mlflow_client,
    poll,
    start_operator,
    tally,
    training_run,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

BEFORE, DURING = 5, 5


def test_mlflow_down_nothing_lost_nothing_doubled_everything_converges(
    chaos_stack: Any, chaos_operator: Any, chaos_cluster: Any, chaos_namespace: str,
    request: pytest.FixtureRequest,
) -> None:
    down_for = chaos_setting(request.config, "mlflow_down")
    kube = Kube(chaos_cluster.kubectl, chaos_namespace)
    model = f"mf-{chaos_namespace[-5:]}"
    early = [f"early-{i}" for i in range(BEFORE)]
    late = [f"late-{i}" for i in range(DURING)]
    op = chaos_operator
    assert start_operator(op)
    kube.apply_all([training_run(n, model, chaos_namespace, seed=i) for i, n in enumerate(early)])
    poll("the early runs' MLflow runs", lambda: all(
        kube.tr_status(n).get("mlflowRunId") for n in early), timeout=180)
    run_ids = {n: kube.tr_status(n)["mlflowRunId"] for n in early}

    mlflow = chaos_stack.mlflow
    # every step in this thread (components started from a short-lived thread used to get the
    # parent-death signal when it ended; procs.GroupReaper follows the process now)
    mlflow.halt(kill=True)
    went_down = time.monotonic()
    kube.apply_all([training_run(n, model, chaos_namespace, seed=BEFORE + i)
                    for i, n in enumerate(late)])

    def unreachable(name: str) -> bool:
        st = kube.tr_status(name)
        return any(c["type"] == "MLflowReachable" and c["status"] == "False"
                   for c in st.get("conditions") or [])

    poll("the late runs to report MLflow unreachable",
         lambda: all(unreachable(n) for n in late), timeout=down_for + 120)
    late_jobs = [j for j in kube.get("jobs") or [] if j["metadata"]["name"].startswith("late")]
    late_status = {n: kube.tr_status(n) for n in late}
    time.sleep(max(0.0, down_for - (time.monotonic() - went_down)))  # the rest of the outage
    healthy_after = mlflow.resume()  # seconds until it answers again
    back = time.monotonic()

    def dead() -> str | None:
        return None if op.alive() else "the operator died:\n" + op.logs()[-3000:]

    names = early + late
    trs = kube.wait_phases("trainingruns", names, TERMINAL, timeout=600, alive=dead)
    converged = time.monotonic() - back
    mv_names = [mv["metadata"]["name"] for mv in kube.get("modelversions") or []]
    kube.wait_phases("modelversions", mv_names, MV_TERMINAL, timeout=300, alive=dead)
    counts = tally(kube, mlflow_client(mlflow.tracking_uri), model, chaos_namespace)
    print(f"CHAOS MLflow down {down_for:g}s (outage {back - went_down:.0f}s): healthy "
          f"{healthy_after:.1f}s after its restart; every TrainingRun terminal "
          f"{converged:.0f}s after MLflow returned; {counts}")
    assert late_jobs == [], late_jobs  # no Job before its MLflow run
    assert all(not st.get("mlflowRunId") and st.get("phase") == "Pending"
               for st in late_status.values()), late_status
    assert Counter(trs[n] for n in names) == {"Succeeded": len(names)}, trs
    assert {n: kube.tr_status(n)["mlflowRunId"] for n in early} == run_ids
    assert counts["problems"] == {}, counts
    assert counts["run_states"] == {"FINISHED": len(names)}
    recovered_tr = kube.get("trainingrun", late[0])
    reachable = next(c for c in recovered_tr["status"]["conditions"]
                     if c["type"] == "MLflowReachable")
    assert reachable["status"] == "True"
