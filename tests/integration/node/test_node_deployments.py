"""Deployments on the node stand-in: availability, readiness gating, endpoints, rollouts, GC."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

SERVER = ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"]


def deployment(name: str, *, replicas: int = 2, version: str = "1",
               ready_path: str = "/") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "web",
                        "image": "python:3.11",
                        "command": SERVER,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "env": [
                            {"name": "POD_IP",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "VERSION", "value": version},
                        ],
                        "readinessProbe": {"httpGet": {"path": ready_path, "port": "http"},
                                           "periodSeconds": 1, "failureThreshold": 1},
                    }],
                },
            },
        },
    }


def available(kube: Any, name: str, replicas: int) -> Any:
    dep = kube.apps.read_namespaced_deployment_status(name, kube.namespace)
    st = dep.status
    done = (
        st.observed_generation == dep.metadata.generation
        and st.updated_replicas == replicas
        and st.ready_replicas == replicas
        and st.available_replicas == replicas
        and (st.replicas or 0) == replicas
        and any(c.type == "Available" and c.status == "True" for c in st.conditions or [])
    )
    return dep if done else None


def pod_pids(pods: list[Any]) -> dict[str, int]:
    return {p.metadata.name: int(p.status.container_statuses[0].container_id.split("://")[1])
            for p in pods}


def test_deployment_becomes_available(kube: Any, local_node: Any) -> None:
    kube.apply(deployment("web"))
    kube.wait_for("Deployment available", lambda: available(kube, "web", 2))
    pods = kube.pods("app=web")
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2
    for ip in ips:  # every pod serves on an address of its own
        assert ipaddress.ip_address(ip) in local_node.ips.network
        assert httpx.get(f"http://{ip}:8080/", timeout=5, trust_env=False).status_code == 200
    for pod in pods:
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == ready["ContainersReady"] == "True"


def test_not_ready_pod_does_not_count_as_available(kube: Any, local_node: Any) -> None:
    kube.apply(deployment("gated", replicas=1, ready_path="/ready.txt"))

    def running_unready() -> Any:
        pods = [p for p in kube.pods("app=gated") if p.status.phase == "Running"]
        return pods[0] if pods and pods[0].status.container_statuses[0].started else None

    pod = kube.wait_for("pod running", running_unready)
    # Probes run every second and fail (404): for a few periods the pod must stay unready.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        dep = kube.apps.read_namespaced_deployment_status("gated", kube.namespace)
        assert not dep.status.available_replicas
        p = kube.core.read_namespaced_pod_status(pod.metadata.name, kube.namespace)
        ready = {c.type: c.status for c in p.status.conditions}
        assert ready["Ready"] == "False" and ready["ContainersReady"] == "False"
        time.sleep(0.5)
    # the readiness endpoint appears in the server's working directory → Ready → available
    workdir = local_node.pod_dir(kube.namespace, pod.metadata.name) / "work" / "web"
    (workdir / "ready.txt").write_text("ok")
    kube.wait_for("Deployment available", lambda: available(kube, "gated", 1))


def test_rolling_update_replaces_pods(kube: Any, local_node: Any, alive: Any) -> None:
    kube.apply(deployment("roll", version="1"))
    kube.wait_for("Deployment available", lambda: available(kube, "roll", 2))
    old = pod_pids(kube.pods("app=roll"))
    assert all(alive(pid) for pid in old.values())

    kube.apply(deployment("roll", version="2"))

    def rolled() -> Any:
        if not available(kube, "roll", 2):
            return None
        pods = kube.pods("app=roll")
        names = {p.metadata.name for p in pods}
        if len(pods) != 2 or names & set(old):
            return None
        return pods

    pods = kube.wait_for("rollout complete, old pods gone", rolled, timeout=90)
    for pod in pods:
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["VERSION"] == "2"
        assert pod.status.container_statuses[0].ready
    kube.wait_for("old processes gone", lambda: not any(alive(p) for p in old.values()))
    replica_sets = kube.apps.list_namespaced_replica_set(kube.namespace,
                                                         label_selector="app=roll").items
    assert sorted(rs.status.replicas for rs in replica_sets) == [0, 2]


def test_deleting_deployment_garbage_collects_children(
    kube: Any, local_node: Any, alive: Any
) -> None:
    kube.apply(deployment("gc", replicas=2))
    kube.wait_for("Deployment available", lambda: available(kube, "gc", 2))
    pids = pod_pids(kube.pods("app=gc"))
    assert kube.apps.list_namespaced_replica_set(kube.namespace, label_selector="app=gc").items

    kube.kubectl("delete", "deployment", "gc", "-n", kube.namespace, "--wait=false")

    def collected() -> bool:
        rs = kube.apps.list_namespaced_replica_set(kube.namespace, label_selector="app=gc").items
        return not rs and not kube.pods("app=gc")

    kube.wait_for("ReplicaSets and pods garbage-collected", collected)
    kube.wait_for("pod processes gone", lambda: not any(alive(p) for p in pids.values()))
