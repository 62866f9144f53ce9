"""kill -9 of the operator at random points while many TrainingRuns run at once.

Each round (one seed) applies ``--chaos-runs`` TrainingRuns in three quick waves and kills the
operator several times while they run: about half of the lives end with SIGKILL at a random
moment (1-30 s into the life), the other half at a failpoint (``after-run-created``,
``after-job-created``, ``after-registered``: right after a side effect, before it is recorded;
a point not reached within 90 s becomes a plain SIGKILL). Then one operator runs undisturbed
until every TrainingRun and ModelVersion is terminal, and each TrainingRun must have exactly
one Job, one MLflow run, one registered version and one ModelVersion; exactly one ModelVersion
is Promoted, the one whose version holds ``champion``.
"""

from __future__ import annotations

import random
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

POINTS = ("after-run-created", "after-job-created", "after-registered")
#: lives of the operator that end in a crash, per round
KILLS = 8


def test_operator_killed_at_random_points_leaves_exactly_one_of_everything(
    chaos_seed: int, chaos_stack: Any, chaos_operator: Any, chaos_cluster: Any,
    chaos_namespace: str, request: pytest.FixtureRequest,
) -> None:
    rng = random.Random(chaos_seed)
    n = chaos_setting(request.config, "runs")
    kube = Kube(chaos_cluster.kubectl, chaos_namespace)
    model = f"chaos-{chaos_namespace[-5:]}"
    experiment = chaos_namespace
    names = [f"tr-{i:03d}" for i in range(n)]
    op = chaos_operator
    began = time.monotonic()
    kills: Counter[str] = Counter()

    # three waves (lives 0, 2, 4), so that runs are still being created and given Jobs when
    # the failpoints of those steps are armed; all of them train at the same time
    waves = {0: names[: n // 2], 2: names[n // 2 : 3 * n // 4], 4: names[3 * n // 4 :]}
    for life in range(KILLS):
        point = rng.choice(POINTS) if life and rng.random() < 0.5 else None
        delay = rng.uniform(1.0, 30.0)  # the random moment of a SIGKILL
        live = start_operator(op, **({"MLOPS_FAILPOINT": point} if point else {}))
        assert live or point, op.logs()[-3000:]
        if life in waves:
            kube.apply_all([training_run(name, model, experiment, seed=names.index(name))
                            for name in waves[life]])
        if point and live:
            # the point may not come (every run past it, or none there yet): then a SIGKILL
            until = time.monotonic() + 90
            poll(f"the operator to reach {point}",
                 lambda u=until: not op.alive() or time.monotonic() > u, timeout=120, interval=1)
        if point and not op.alive():
            assert f"failpoint {point} reached" in op.log_path.read_text(), op.logs()[-3000:]
            kills[point] += 1
            op.stop()
            continue
        time.sleep(delay)
        op.stop(kill=True)
        kills["SIGKILL"] += 1
    assert start_operator(op)

    def dead() -> str | None:
        return None if op.alive() else "the operator died:\n" + op.logs()[-3000:]

    trs = kube.wait_phases("trainingruns", names, TERMINAL, timeout=300 + 6 * n, alive=dead)
    mv_names = [mv["metadata"]["name"] for mv in kube.get("modelversions") or []]
    kube.wait_phases("modelversions", mv_names, MV_TERMINAL, timeout=300, alive=dead)
    client = mlflow_client(chaos_stack.mlflow.tracking_uri)

    def one_champion() -> list[dict[str, Any]] | None:
        # promote defaults to Auto/champion: one version holds it, its ModelVersion alone says so
        promoted = [mv for mv in kube.get("modelversions") or []
                    if (mv.get("status") or {}).get("phase") == "Promoted"]
        holder = client.get_model_version_by_alias(model, "champion")
        return promoted if [mv["spec"]["version"] for mv in promoted] == [holder.version] else None

    poll("exactly one Promoted ModelVersion, the champion's", one_champion, timeout=120,
         alive=dead)
    counts = tally(kube, client, model, experiment)
    print(f"CHAOS operator-kill seed={chaos_seed} runs={n} kills={dict(kills)} "
          f"({sum(kills.values())}) jobs={counts['jobs']} mlflow-runs={counts['runs']} "
          f"versions={counts['versions']} modelversions={counts['modelversions']} "
          f"duplicates={counts['duplicates']} missing={counts['missing']} "
          f"run-states={counts['run_states']} took={time.monotonic() - began:.0f}s")
    assert sum(kills.values()) == KILLS
    assert counts["problems"] == {}, (counts, {
        name: (kube.tr_status(name), op.log_path) for name in counts["problems"]})
    assert counts["strays"] == {"jobs": 0, "runs": 0, "versions": 0, "modelversions": 0}
    assert Counter(trs[name] for name in names) == {"Succeeded": n}, trs
    assert counts["run_states"] == {"FINISHED": n}
    assert counts["trainingruns"] == counts["jobs"] == counts["runs"] == n
    assert counts["versions"] == counts["modelversions"] == n
    for tr in kube.get("trainingruns"):
        st = tr["status"]
        mv = kube.get("modelversion", st["modelVersion"]["name"])
        assert mv["spec"]["version"] == st["modelVersion"]["version"], (tr, mv)
        assert mv["spec"]["tags"]["mlops.dev/run-id"] == st["mlflowRunId"]
