"""A pod's gRPC readiness probe on the node stand-in follows its grpc.health.v1 status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

pytestmark = pytest.mark.integration

# A grpc.health.v1 server on the pod IP: SERVING while the flag file exists, else NOT_SERVING.
HEALTH_SERVER = """
import os, sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
flag, port = sys.argv[1], int(sys.argv[2])
class Logged(health.HealthServicer):
    def Check(self, request, context):
        resp = super().Check(request, context)
        print(f"check {request.service} {resp.status}", flush=True)
        return resp
servicer = Logged()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port(f"{os.environ['POD_IP']}:{port}")
server.start()
print("serving health", flush=True)
S = health_pb2.HealthCheckResponse
while True:
    servicer.set("app", S.SERVING if os.path.exists(flag) else S.NOT_SERVING)
    time.sleep(0.1)
"""


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def ready(kube: Any, name: str) -> str | None:
    p = kube.core.read_namespaced_pod_status(name, kube.namespace)
    conds = {c.type: c.status for c in p.status.conditions or []}
    return conds.get("Ready")


def test_readiness_follows_the_grpc_health_status(
    kube: Any, local_node: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "serving"
    kube.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "grpc-health"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "python:3.11",
                "command": ["python", "-c", HEALTH_SERVER, str(flag), "50051"],
                "env": [{"name": "POD_IP",
                         "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "ports": [{"name": "grpc", "containerPort": 50051}],
                "readinessProbe": {"grpc": {"port": 50051, "service": "app"},
                                   "periodSeconds": 1, "failureThreshold": 1,
                                   "timeoutSeconds": 2},
            }],
        },
    })

    def log() -> str:
        try:
            return local_node.logs(kube.namespace, "grpc-health")
        except FileNotFoundError:  # not started yet
            return ""

    def unhealthy_event() -> Any:
        events = kube.core.list_namespaced_event(
            kube.namespace, field_selector="involvedObject.name=grpc-health").items
        return [e for e in events if e.reason == "Unhealthy"
                and "NOT_SERVING" in (e.message or "")]

    # the probe asked (the server logs each Check) and got NOT_SERVING, twice: not Ready
    not_serving = f"check app {NOT_SERVING}"
    kube.wait_for("two NOT_SERVING health checks", lambda: log().count(not_serving) >= 2)
    assert ready(kube, "grpc-health") == "False"

    flag.touch()
    kube.wait_for("Ready once the health service says SERVING",
                  lambda: ready(kube, "grpc-health") == "True")
    flag.unlink()
    kube.wait_for("not Ready again after NOT_SERVING",
                  lambda: ready(kube, "grpc-health") == "False")
    kube.wait_for("the readiness failure event naming NOT_SERVING", unhealthy_event)
