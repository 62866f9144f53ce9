"""Pods the apiserver admits or refuses: the restricted Pod Security Standard, and a refusal
(quota) surfaced on the TrainingRun within seconds instead of an endless "waiting"."""

from __future__ import annotations

from typing import Any

import pytest
from trhelpers import Kube, condition, example, poll

pytestmark = pytest.mark.integration


def test_the_example_trains_in_a_namespace_enforcing_restricted(
    node: Any, operator: Any, kube: Kube, kubectl: Any, namespace: str,
) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    kube.apply(example("strict", model="strict", experiment="strict"))
    tr = kube.wait_terminal("strict")
    assert tr["status"]["phase"] == "Succeeded", tr["status"]
    # one pod, or more when the Job retried one (a pod killed on a starved machine)
    pods = kube.get("pods", selector="mlops.dev/trainingrun=strict")
    assert pods and all(p["spec"]["securityContext"]["runAsNonRoot"] is True for p in pods), pods


def test_a_refused_pod_is_a_condition_and_a_warning_then_recovers(
    node: Any, operator: Any, kube: Kube, kubectl: Any, namespace: str,
) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
                "spec": {"hard": {"pods": "0"}}})
    kube.apply(example("refused", model="refused", experiment="refused"))

    def refused() -> dict | None:
        tr = kube.tr("refused")
        return tr if condition(tr, "Ready").get("reason") == "FailedCreate" else None

    tr = poll("FailedCreate on the TrainingRun", refused, timeout=60)
    message = condition(tr, "Ready")["message"]
    assert "exceeded quota" in message and "no-pods" in message, message
    assert tr["status"]["phase"] == "Pending"
    warnings = [e for e in kube.events("refused") if e["type"] == "Warning"]
    assert any(e["reason"] == "FailedCreate" and "exceeded quota" in e["message"]
               for e in warnings), warnings
    kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    assert kube.wait_terminal("refused")["status"]["phase"] == "Succeeded"
