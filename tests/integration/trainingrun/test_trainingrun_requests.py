"""What one TrainingRun costs the API server up to "its Job exists", counted by the operator's
own client (``mlops_kube_requests_total`` on its /metrics; kopf's finalizer and Events go
through kopf's client and are counted here from the Events themselves)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from trhelpers import Kube, example, poll

pytestmark = pytest.mark.integration


def counters(text: str, name: str, label: str | None = None) -> Counter[str]:
    """A counter of the operator's /metrics, by its labels (``verb resource``) or one label."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = labels[label] if label else f"{labels['verb']} {labels['resource']}"
            out[key] += int(float(line.rsplit(" ", 1)[1]))
    return out


def test_one_trainingrun_to_its_job_costs_one_job_create_and_no_job_reads(
    operator: Any, kube: Kube,
) -> None:
    # a pods quota of 0: the Job can never have a pod (whether or not a node runs pods), so the
    # TrainingRun's way ends at its Job and the FailedCreate that refuses the pod
    kube.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
                "spec": {"hard": {"pods": "0"}}})
    kube.apply(example("counted", model="counted", experiment="counted"))

    def later_passes() -> dict | None:
        """The refused pod is on the TrainingRun, and more passes than the first ran (kopf's
        finalizer, the Job's events, the 3 s looks for a refused pod)."""
        tr = kube.tr("counted")
        passes = counters(operator.metrics(), "mlops_reconcile_passes_total", "kind")
        ready = [c for c in (tr.get("status") or {}).get("conditions") or []
                 if c["type"] == "Ready"]
        if ready and ready[0]["reason"] == "FailedCreate" and passes["TrainingRun"] >= 4:
            return tr
        return None

    tr = poll("later passes over a TrainingRun with its Job", later_passes, timeout=120)
    assert tr["status"]["phase"] == "Pending" and tr["status"]["jobName"] == "counted-train"
    assert tr["status"]["mlflowRunId"]
    metrics = operator.metrics()
    requests = counters(metrics, "mlops_kube_requests_total")
    passes = counters(metrics, "mlops_reconcile_passes_total", "kind")["TrainingRun"]
    print("operator requests:", dict(requests), "passes:", passes)
    # one create of the Job, ever; later passes read it from the Job watch, not from the API
    assert requests["create jobs"] == 1, requests
    assert requests["get jobs"] == 0, requests
    # two status writes: the run id with the Job's name (before the Job exists), the refused
    # pod; kopf wrote its finalizer and no diff base (handlers/startup.py: NoDiffBase)
    assert requests["patch trainingruns/status"] == 2, requests
    assert tr["metadata"]["finalizers"] == ["mlops.dev/finalizer"], tr["metadata"]
    assert not [a for a in tr["metadata"].get("annotations") or {}
                if a.endswith("last-handled-configuration")], tr["metadata"]
    # the pass that created the Job looked at no pod and no Event (none could exist yet), and
    # the Events are read only when there is no pod
    assert requests["list pods"] < passes, (requests, passes)
    assert 1 <= requests["list events"] <= requests["list pods"], requests
    # the user-visible Events of the way there, each once
    reasons = Counter(e["reason"] for e in kube.events("counted"))
    assert (reasons["RunCreated"], reasons["JobCreated"], reasons["FailedCreate"]) == (1, 1, 1), (
        reasons)
