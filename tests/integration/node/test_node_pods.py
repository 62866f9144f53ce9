"""Pods on the node stand-in: environment, identity, probes, deletion."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DUMP_ENV = (
    "import json, os; "
    "print('ENV=' + json.dumps({k: v for k, v in os.environ.items()}))"
)


def pod(name: str, command: list[str], **container: Any) -> dict:
    restart = container.pop("restart", "Never")
    grace = container.pop("grace", 1)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": "python:3.11", "command": command,
                            **container}],
        },
    }


def phase_is(kube: Any, name: str, *phases: str) -> Any:
    p = kube.core.read_namespaced_pod_status(name, kube.namespace)
    return p if p.status.phase in phases else None


def logged_env(node: Any, namespace: str, name: str) -> dict[str, str]:
    line = next(x for x in node.logs(namespace, name).splitlines() if x.startswith("ENV="))
    return json.loads(line[4:])


def test_env_value_from_is_resolved(kube: Any, local_node: Any) -> None:
    kube.apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
         "stringData": {"password": "s3cret"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
         "data": {"lr": "0.01", "EPOCHS": "3"}},
    ])
    kube.apply(pod("envs", ["python", "-c", DUMP_ENV], env=[
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "LR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "lr"}}},
        {"name": "URL", "value": "http://$(POD_IP):8080/?lr=$(LR)"},
    ], envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]))
    done = kube.wait_for("pod Succeeded", lambda: phase_is(kube, "envs", "Succeeded", "Failed"))
    assert done.status.phase == "Succeeded"
    env = logged_env(local_node, kube.namespace, "envs")
    ip = done.status.pod_ip
    assert env["POD_IP"] == ip and ipaddress.ip_address(ip) in local_node.ips.network
    assert env["POD_NAME"] == "envs"
    assert env["POD_NS"] == kube.namespace
    assert env["PASSWORD"] == "s3cret"
    assert env["LR"] == "0.01"
    assert env["CFG_EPOCHS"] == "3" and env["CFG_lr"] == "0.01"
    assert env["URL"] == f"http://{ip}:8080/?lr=0.01"
    assert env["HOSTNAME"] == "envs"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


def test_missing_secret_waits_then_starts(kube: Any, local_node: Any) -> None:
    kube.apply(pod("late", ["python", "-c", DUMP_ENV], env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}]))

    def config_error() -> Any:
        p = kube.core.read_namespaced_pod_status("late", kube.namespace)
        cs = (p.status.container_statuses or [None])[0]
        waiting = cs.state.waiting if cs else None
        return waiting if waiting and waiting.reason == "CreateContainerConfigError" else None

    waiting = kube.wait_for("CreateContainerConfigError", config_error)
    assert 'secret' in waiting.message and "late" in waiting.message
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"},
                "stringData": {"t": "now"}})
    kube.wait_for("pod Succeeded", lambda: phase_is(kube, "late", "Succeeded"))
    assert logged_env(local_node, kube.namespace, "late")["TOKEN"] == "now"


def test_pod_talks_to_the_api_as_its_service_account(kube: Any, local_node: Any) -> None:
    script = (
        "from kubernetes import client, config; config.load_config(); "
        "r = client.AuthenticationV1Api().create_self_subject_review("
        "client.V1SelfSubjectReview()); print('USER=' + r.status.user_info.username)"
    )
    kube.apply(pod("whoami", ["python", "-c", script]))
    done = kube.wait_for("pod finished", lambda: phase_is(kube, "whoami", "Succeeded", "Failed"))
    out = local_node.logs(kube.namespace, "whoami")
    assert done.status.phase == "Succeeded", out
    assert f"USER=system:serviceaccount:{kube.namespace}:default" in out


def test_liveness_failure_restarts_the_container(kube: Any, local_node: Any) -> None:
    kube.apply(pod(
        "sick", ["python", "-c", "import time; print('up'); time.sleep(600)"], restart="Always",
        livenessProbe={"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2},
    ))

    def restarted() -> Any:
        p = kube.core.read_namespaced_pod_status("sick", kube.namespace)
        cs = (p.status.container_statuses or [None])[0]
        return cs if cs and cs.restart_count >= 1 and cs.last_state.terminated else None

    cs = kube.wait_for("a liveness restart", restarted)
    assert "Liveness probe failed" in cs.last_state.terminated.message
    assert cs.last_state.terminated.exit_code in (137, 143)
    # the status records the restart when the new process is started; its first line may come
    # a moment later (Python's start-up)
    kube.wait_for("the restarted container's output",
                  lambda: local_node.logs(kube.namespace, "sick").count("up") >= 2, timeout=30)


def test_deleting_a_pod_kills_its_process_tree(kube: Any, local_node: Any, alive: Any) -> None:
    script = (
        "import subprocess, time; "
        "child = subprocess.Popen(['sleep', '600']); "
        "open('child.pid', 'w').write(str(child.pid)); print('started', flush=True); "
        "time.sleep(600)"
    )
    kube.apply(pod("sleeper", ["python", "-c", script], grace=30))

    def child_pid() -> int | None:
        pdir = local_node.pod_dir(kube.namespace, "sleeper")
        f = Path(pdir or "/nonexistent") / "work" / "main" / "child.pid"
        return int(f.read_text()) if f.exists() and f.read_text() else None

    child = kube.wait_for("the child process", child_pid)
    running = kube.wait_for("pod Running", lambda: phase_is(kube, "sleeper", "Running"))
    pid = int(running.status.container_statuses[0].container_id.split("://")[1])
    assert alive(pid) and alive(child)

    kube.kubectl("delete", "pod", "sleeper", "-n", kube.namespace, "--wait=false")

    def gone() -> bool:
        names = [p.metadata.name for p in kube.pods()]
        return "sleeper" not in names

    kube.wait_for("pod deleted from the API", gone, timeout=30)
    assert not alive(pid), "container process still running"
    kube.wait_for("child process gone", lambda: not alive(child), timeout=5)


def test_init_containers_and_volumes(kube: Any, local_node: Any) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "params"},
                "data": {"params.json": '{"lr": 0.1}'}})
    init_script = (
        "import os, pathlib; "
        "p = pathlib.Path(os.environ['MLOPS_LOCAL_MOUNT_SCRATCH']) / 'data.csv'; "
        "p.write_text('x,y\\n1,2\\n'); print('prepared', p)"
    )
    main_script = (
        "import json, os, pathlib; mounts = json.loads(os.environ['MLOPS_LOCAL_MOUNTS']); "
        "data = (pathlib.Path(mounts['/data']) / 'data.csv').read_text(); "
        "params = json.loads((pathlib.Path(mounts['/etc/params']) / 'params.json').read_text()); "
        "print('ROWS', len(data.splitlines()), 'LR', params['lr'])"
    )
    manifest = pod("initvol", ["python", "-c", main_script], volumeMounts=[
        {"name": "scratch", "mountPath": "/data"},
        {"name": "params", "mountPath": "/etc/params"},
    ])
    manifest["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}},
                                   {"name": "params", "configMap": {"name": "params"}}]
    manifest["spec"]["initContainers"] = [{
        "name": "prepare", "image": "python:3.11", "command": ["python", "-c", init_script],
        "volumeMounts": [{"name": "scratch", "mountPath": "/data"}],
    }]
    kube.apply(manifest)
    done = kube.wait_for("pod finished", lambda: phase_is(kube, "initvol", "Succeeded", "Failed"))
    out = local_node.logs(kube.namespace, "initvol")
    assert done.status.phase == "Succeeded", out
    assert "ROWS 2 LR 0.1" in out
    init = done.status.init_container_statuses[0]
    assert init.state.terminated.exit_code == 0
    assert init.state.terminated.finished_at <= (
        done.status.container_statuses[0].state.terminated.started_at)
    assert "prepared" in local_node.logs(kube.namespace, "initvol", container="prepare")
