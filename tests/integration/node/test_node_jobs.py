"""Jobs on the node stand-in: completion, retries up to backoffLimit, failure reasons."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest

from mlops_localstack.cluster import poll

pytestmark = pytest.mark.integration


def job(name: str, script: str, *, restart: str = "Never", backoff: int = 0) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {"spec": {
                "restartPolicy": restart,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "python:3.11",
                                "command": ["python", "-c", script]}],
            }},
        },
    }


def job_condition(kube: Any, name: str, ctype: str) -> Any:
    status = kube.batch.read_namespaced_job_status(name, kube.namespace).status
    return next((c for c in status.conditions or [] if c.type == ctype and c.status == "True"),
                None)


def test_node_is_registered_ready_with_a_fresh_lease(cluster: Any, local_node: Any) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        node = client.CoreV1Api(api).read_node(local_node.name)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"
        assert not [t for t in node.spec.taints or [] if t.effect in ("NoSchedule", "NoExecute")]
        assert node.metadata.labels["kubernetes.io/hostname"] == local_node.name
        assert {"cpu", "memory", "pods"} <= set(node.status.allocatable)
        assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == "127.0.0.1"
        lease = client.CoordinationV1Api(api).read_namespaced_lease(local_node.name,
                                                                     "kube-node-lease")
        assert lease.spec.holder_identity == local_node.name
        age = dt.datetime.now(dt.UTC) - lease.spec.renew_time
        assert age < dt.timedelta(seconds=lease.spec.lease_duration_seconds)
        first = lease.spec.renew_time
        coordination = client.CoordinationV1Api(api)
        poll(  # renewed every 10 s
            "the node's lease to be renewed",
            lambda: coordination.read_namespaced_lease(
                local_node.name, "kube-node-lease").spec.renew_time > first,
            timeout=20, interval=0.5,
        )
    finally:
        api.close()


def test_job_runs_to_completion(kube: Any, local_node: Any) -> None:
    kube.apply(job("hello", "import sys; print('hello from', sys.executable)"))
    kube.wait_for("Job complete", lambda: job_condition(kube, "hello", "Complete"))
    status = kube.batch.read_namespaced_job_status("hello", kube.namespace).status
    assert status.succeeded == 1 and not status.failed
    (pod,) = kube.pods("job-name=hello")
    assert pod.spec.node_name == local_node.name
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert ipaddress.ip_address(pod.status.pod_ip) in local_node.ips.network
    out = local_node.logs(kube.namespace, pod.metadata.name)
    assert "hello from" in out and ".venv" in out  # ran in the project's environment


def test_failing_job_is_retried_then_fails(kube: Any, local_node: Any) -> None:
    script = "import sys; print('training diverged: loss=nan'); sys.exit(3)"
    kube.apply(job("doomed", script, backoff=1))
    cond = kube.wait_for("Job failed", lambda: job_condition(kube, "doomed", "Failed"),
                         timeout=90)
    assert cond.reason == "BackoffLimitExceeded"
    status = kube.batch.read_namespaced_job_status("doomed", kube.namespace).status
    assert status.failed == 2 and not status.succeeded
    pods = kube.pods("job-name=doomed")
    assert len(pods) == 2  # the first attempt and one retry (backoffLimit: 1)
    for pod in pods:
        assert pod.status.phase == "Failed"
        cs = pod.status.container_statuses[0]
        assert cs.restart_count == 0
        assert cs.state.terminated.exit_code == 3
        assert cs.state.terminated.reason == "Error"
        # the last log lines become the termination message (FallbackToLogsOnError)
        assert "training diverged: loss=nan" in cs.state.terminated.message


def test_on_failure_restarts_in_place_until_backoff_limit(kube: Any, local_node: Any) -> None:
    kube.apply(job("flaky", "import sys; print('attempt'); sys.exit(1)", restart="OnFailure",
                   backoff=2))
    cond = kube.wait_for("Job failed", lambda: job_condition(kube, "flaky", "Failed"), timeout=90)
    assert cond.reason == "BackoffLimitExceeded"
    # the Job controller deletes the pod; before that it restarted in place, so its log has
    # one line per run
    logs = kube.wait_for("the pod's log", lambda: _job_log(kube, local_node, "flaky"))
    assert logs.count("attempt") >= 3


def _job_log(kube: Any, node: Any, job_name: str) -> str:
    dirs = sorted(node.pods_dir.glob(f"{kube.namespace}_{job_name}-*"))
    return "".join((d / "main.log").read_text() for d in dirs if (d / "main.log").exists())


def test_unknown_image_without_command_fails_clearly(kube: Any, local_node: Any) -> None:
    kube.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "web", "image": "nginx:1.27"}]},
    })

    def failed() -> Any:
        pod = kube.core.read_namespaced_pod_status("nginx", kube.namespace)
        return pod if pod.status.phase == "Failed" else None

    pod = kube.wait_for("pod Failed", failed)
    term = pod.status.container_statuses[0].state.terminated
    assert term.reason == "ImageEntrypointUnknown"
    assert "nginx:1.27" in term.message
