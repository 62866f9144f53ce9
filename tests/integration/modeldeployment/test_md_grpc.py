"""A ModelDeployment's gRPC side on the local stack: the HTTP port cannot take the gRPC port
(refused at apply by the real apiserver), pods become Ready through their gRPC readiness probe,
and a real ``tritonclient.grpc`` client gets ModelInfer answers through the Service port
``grpc``.

The node stand-in has no kube-proxy (docs/node-standin.md), so the test resolves the Service
port as kube-proxy would: Service port ``grpc`` → its ``targetPort`` (the container port name)
on a Ready pod of the Service's selector.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from mdhelpers import MD, manifest

pytestmark = pytest.mark.integration

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float64)


def _spec(port: int) -> dict[str, Any]:
    obj = manifest("ports", "iris", "service")
    obj["spec"]["runtime"] = {"port": port}
    return obj


@pytest.mark.usefixtures("crds")
def test_the_http_port_cannot_be_the_grpc_port(kubectl: Any, namespace: str) -> None:
    refused = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(_spec(8081)),
                      check=False)
    assert refused.returncode != 0
    assert "spec.runtime.port: Invalid value" in refused.stderr, refused.stderr
    assert "port 8081 is the model server's gRPC port" in refused.stderr, refused.stderr
    # any other port is fine, the neighbours included
    for port in (8080, 8082):
        obj = copy.deepcopy(_spec(port))
        obj["metadata"]["name"] = f"ports-{port}"
        kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))
    # and an edit onto 8081 is refused too
    edit = kubectl("patch", "md", "ports-8080", "-n", namespace, "--type=merge", "-p",
                   json.dumps({"spec": {"runtime": {"port": 8081}}}), check=False)
    assert edit.returncode != 0 and "is the model server's gRPC port" in edit.stderr


def _service_target(md: MD, service: str, port_name: str) -> str:
    """``<pod IP>:<container port>`` behind ``service``'s port ``port_name`` (a Ready pod)."""
    svc = md.get("service", service)
    (port,) = [p for p in svc["spec"]["ports"] if p["name"] == port_name]
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())

    def ready_target() -> str | None:
        for pod in md.get("pods", selector=selector):
            conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            if conds.get("Ready") != "True":
                continue
            (container,) = pod["spec"]["containers"]
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            target = port["targetPort"]
            number = named[target] if isinstance(target, str) else target
            return f"{pod['status']['podIP']}:{number}"
        return None

    return md.wait(f"a Ready pod behind {service}:{port_name}", ready_target)


def test_pods_ready_by_grpc_probe_answer_tritonclient_grpc_through_the_service_port(
    node: Any, md: MD, model: tuple[str, str, str],
) -> None:
    import tritonclient.grpc as grpcclient

    name, v1, v2 = model
    md.apply(manifest("g", name, "service", replicas=1))
    st = md.wait_status("g", lambda s: s.get("phase") == "Ready", "Ready", timeout=240)
    assert st["ready"] == "2/2"

    for variant, version in (("champion", v1), ("challenger", v2)):
        service = f"g-{variant}"
        svc = md.get("service", service)
        assert {p["name"]: (p["port"], p.get("appProtocol")) for p in svc["spec"]["ports"]} == {
            "http": (8080, None), "grpc": (8081, "kubernetes.io/h2c")}
        pods = md.get("pods", selector=f"mlops.dev/deployment=g,mlops.dev/variant={variant}")
        (pod,) = pods
        (container,) = pod["spec"]["containers"]
        # Ready came from the gRPC probe: it is the only readiness probe the pod has
        assert container["readinessProbe"]["grpc"] == {"port": 8081, "service": ""}
        assert "httpGet" not in container["readinessProbe"]

        target = _service_target(md, service, "grpc")
        client = grpcclient.InferenceServerClient(url=target)
        try:
            assert client.is_server_ready() and client.is_model_ready(name)
            inp = grpcclient.InferInput("x", list(ROWS.shape), "FP64")
            inp.set_data_from_numpy(ROWS)
            result = client.infer(name, [inp])
        finally:
            client.close()
        response = result.get_response()
        assert response.model_name == name and response.model_version == version
        (output,) = response.outputs
        predictions = result.as_numpy(output.name)
        assert predictions is not None and predictions.shape[0] == len(ROWS)
        assert [int(v) for v in predictions.reshape(len(ROWS), -1)[:, 0]] == [0, 2]  # iris
