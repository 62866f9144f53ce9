"""Bad input and failure at install time: a missing MLflow URI fails the operator's readiness
with a log line that says so; RBAC missing a verb gives a condition naming verb and resource
(faster variants on the plain local stack: tests/integration/controller/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from chart_stack import CHART, EXAMPLES, RELEASE, RELEASE_NS, ChartStack, kube_json

from mlops_localstack.cluster import poll

pytestmark = [pytest.mark.integration, pytest.mark.install]


def test_missing_mlflow_uri_fails_readiness_with_a_clear_log_line(chart_stack: ChartStack) -> None:
    stack = chart_stack
    if stack.release_exists():
        stack.uninstall()
    values = stack.values()
    values[values.index(f"mlflow.trackingUri={stack.tracking_uri}")] = "mlflow.trackingUri="
    out = stack.install(*values, wait_ready=False)
    try:
        assert "WARNING: mlflow.trackingUri is empty" in out
        pod = poll("the operator pod to run",
                   lambda: [p for p in stack.operator_pods()
                            if (p.get("status") or {}).get("containerStatuses")], timeout=120)[0]
        name = pod["metadata"]["name"]
        poll("the log line naming the missing URI",
             lambda: "ERROR mlops_operator.handlers.startup: MLOPS_MLFLOW_TRACKING_URI is not set"
             in stack.node.logs(RELEASE_NS, name), timeout=90, interval=1)
        # the readiness probe (kopf's /healthz) has failed, and the pod keeps running
        poll("a failed readiness probe", lambda: "Activity 'configured' failed permanently"
             in stack.node.logs(RELEASE_NS, name), timeout=90, interval=1)
        [pod] = stack.operator_pods()
        assert not stack.ready_pods(), pod["status"]
        assert [c["restartCount"] for c in pod["status"]["containerStatuses"]] == [0]
    finally:
        stack.uninstall()


def test_rbac_missing_a_verb_is_a_condition_naming_it(chart_stack: ChartStack,
                                                       tmp_path: Path) -> None:
    stack = chart_stack
    if stack.release_exists():
        stack.uninstall()
    chart = tmp_path / "mlops-operator"
    shutil.copytree(CHART, chart, symlinks=False)
    helpers = chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    jobs = "  resources: [jobs]\n  verbs: [list, watch, get, create, delete]"
    assert jobs in text
    helpers.write_text(text.replace(jobs, "  resources: [jobs]\n  verbs: [list, watch, get, delete]"))
    stack.install(*stack.values(), chart=chart)
    try:
        ns = stack.namespace("no-jobs")
        doc = yaml.safe_load((EXAMPLES / "trainingrun.yaml").read_text())
        stack.cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc))

        def forbidden() -> dict | None:
            tr = kube_json(stack, "get", "tr", "iris-train-1", "-n", ns) or {}
            for c in (tr.get("status") or {}).get("conditions") or []:
                if c.get("status") == "False" and "create" in c.get("message", "") \
                        and "jobs" in c.get("message", ""):
                    return c
            return None

        cond = poll("a condition naming `create` and `jobs`", forbidden, timeout=120, interval=1)
        print(cond)
        assert cond["type"] == "Ready" and cond["reason"] == "Forbidden", cond
        assert f"may not create jobs.batch in namespace {ns}" in cond["message"], cond
        assert f"system:serviceaccount:{RELEASE_NS}:{RELEASE}-mlops-operator" in cond["message"]
        logs = stack.operator_logs(tail=400)
        assert "Traceback" not in logs, logs
    finally:
        stack.uninstall()
