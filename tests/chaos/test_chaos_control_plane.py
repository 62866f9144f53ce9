"""The control plane crashes under the operator: kube-apiserver killed and restarted, then etcd
killed and restarted (its data directory kept), while TrainingRuns are in flight. Nothing is lost
(the objects from before are still there, same uid), nothing is done twice, everything finishes.
Recovery times are printed (never asserted)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from chaoshelpers import (
    MV_TERMINAL,
    TERMINAL,
    Kube,
    mlflow_client,
    poll,
    start_operator,
    tally,
    training_run,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RUNS = 8


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_component_killed_mid_flight_everything_converges(
    component: str, chaos_stack: Any, chaos_operator: Any, chaos_cluster: Any,
    chaos_namespace: str,
) -> None:
    kube = Kube(chaos_cluster.kubectl, chaos_namespace)
    model = f"cp-{chaos_namespace[-5:]}"
    names = [f"tr-{i}" for i in range(RUNS)]
    op = chaos_operator
    assert start_operator(op)
    kube.apply_all([training_run(n, model, chaos_namespace, seed=i) for i, n in enumerate(names)])
    # mid-flight: some runs have their Job, none has finished
    poll("the first training Jobs", lambda: len(kube.get("jobs") or []) >= 2, timeout=180)
    before = {tr["metadata"]["name"]: tr["metadata"]["uid"] for tr in kube.get("trainingruns")}
    phases_before = Counter((tr.get("status") or {}).get("phase") for tr in
                            kube.get("trainingruns"))
    down = time.monotonic()
    ready_after = chaos_stack.control_plane.restart(component, down_for=3, kill=True)

    def dead() -> str | None:
        return None if op.alive() else "the operator died:\n" + op.logs()[-3000:]

    trs = kube.wait_phases("trainingruns", names, TERMINAL, timeout=600, alive=dead)
    converged = time.monotonic() - down
    mv_names = [mv["metadata"]["name"] for mv in kube.get("modelversions") or []]
    kube.wait_phases("modelversions", mv_names, MV_TERMINAL, timeout=300, alive=dead)
    counts = tally(kube, mlflow_client(chaos_stack.mlflow.tracking_uri), model, chaos_namespace)
    print(f"CHAOS {component} killed (down 3 s) with {dict(phases_before)}: apiserver ready "
          f"{ready_after:.1f}s after the restart; every TrainingRun terminal {converged:.0f}s "
          f"after the kill; {counts}")
    after = {tr["metadata"]["name"]: tr["metadata"]["uid"] for tr in kube.get("trainingruns")}
    assert after == before  # etcd's data survived: the same objects, not recreated ones
    assert Counter(trs[n] for n in names) == {"Succeeded": RUNS}, trs
    assert counts["problems"] == {}, counts
    assert counts["run_states"] == {"FINISHED": RUNS}
    assert op.alive()  # the operator rode it out: no restart needed
