"""EndpointSlice discovery, the pod fallback and ConfigMap config on a real Kubernetes API."""

from __future__ import annotations

import pytest

from mlops_runtime.router.discovery import EndpointSliceDiscovery, read_configmap

pytestmark = pytest.mark.integration


def _service(core, namespace: str, name: str, selector: dict | None = None) -> None:  # noqa: ANN001
    spec: dict = {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if selector:
        spec["selector"] = selector
    core.create_namespaced_service(namespace, {"metadata": {"name": name}, "spec": spec})


def test_ready_endpoints_of_a_service(k8s_client, namespace) -> None:  # noqa: ANN001
    from kubernetes import client

    core, discovery = client.CoreV1Api(k8s_client), client.DiscoveryV1Api(k8s_client)
    _service(core, namespace, "iris-a")
    discovery.create_namespaced_endpoint_slice(namespace, {
        "metadata": {"name": "iris-a-1", "labels": {
            "kubernetes.io/service-name": "iris-a",
            "endpointslice.kubernetes.io/managed-by": "tests.mlops.dev"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["198.18.3.1"], "conditions": {"ready": True}},
            {"addresses": ["198.18.3.2"], "conditions": {"ready": False}},
        ]})  # fmt: skip
    found = EndpointSliceDiscovery(discovery, core).endpoints(namespace, "iris-a", "http")
    assert found == ["http://198.18.3.1:8080"]
    assert EndpointSliceDiscovery(discovery, core).endpoints(namespace, "other") == []

    core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "router"}, "data": {"router.yaml": "variants: []"}})  # fmt: skip
    assert read_configmap(namespace, "router", "router.yaml", core) == "variants: []"


def test_pod_fallback_for_loopback_pod_ips(k8s_client, namespace) -> None:  # noqa: ANN001
    """The API server keeps 127.x pod IPs out of EndpointSlices; the router reads the pods."""
    from kubernetes import client

    core, discovery = client.CoreV1Api(k8s_client), client.DiscoveryV1Api(k8s_client)
    _service(core, namespace, "iris-b", {"app": "iris-b"})
    for i, ready in ((1, "True"), (2, "False")):
        name = f"iris-b-{i}"
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "labels": {"app": "iris-b"}},
            # bound to a node that does not exist, so a running node stand-in leaves them
            # alone and the status written below stays as written
            "spec": {"nodeName": "no-such-node",
                     "containers": [{"name": "server", "image": "mlops-runtime:dev",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}})  # fmt: skip
        core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": f"127.10.9.{i}", "podIPs": [{"ip": f"127.10.9.{i}"}],
            "conditions": [{"type": "Ready", "status": ready}]}})  # fmt: skip
    found = EndpointSliceDiscovery(discovery, core).endpoints(namespace, "iris-b")
    assert found == ["http://127.10.9.1:8080"]
    strict = EndpointSliceDiscovery(discovery, core, pod_fallback=False)
    assert strict.endpoints(namespace, "iris-b") == []
