"""Fixtures of the alert receiver tests: the receiver in this process on a loopback port, with
``mlops_operator.kube`` pointed at the session's cluster, and ModelDeployments to retrain."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alerthelpers import TEMPLATE, TOKEN, ReceiverThread

from mlops_localstack.cluster import Cluster
from mlops_localstack.procs import free_port
from mlops_operator import kube
from mlops_operator.alerts import ReceiverConfig


@pytest.fixture(scope="session")
def kube_on_cluster(cluster: Cluster, crds: list[str], k8s_client: Any) -> Iterator[None]:
    """``mlops_operator.kube`` (the operator's one client helper) talking to the test cluster."""
    saved = kube._api, dict(kube._resources)
    kube._api = k8s_client
    kube._resources.clear()
    try:
        yield
    finally:
        kube._api = saved[0]
        kube._resources.clear()
        kube._resources.update(saved[1])


@pytest.fixture
def receiver(kube_on_cluster: None, namespace: str) -> Iterator[ReceiverThread]:
    """A receiver with token :data:`TOKEN`, acting only in the test's namespace."""
    cfg = ReceiverConfig(port=free_port(), host="127.0.0.1", token=TOKEN,
                         namespaces=(namespace,), max_body_bytes=64 * 1024)
    thread = ReceiverThread(cfg).start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def make_deployment(kubectl: Callable[..., Any], namespace: str) -> Callable[..., dict]:
    """Create a ModelDeployment with ``spec.retrain`` (no operator runs: nothing reconciles it)."""

    def make(name: str = "iris", alerts: tuple[str, ...] = ("ModelFeatureDrift",),
             cooldown: str = "1h", max_concurrent: int = 1,
             template: dict[str, Any] | None = None) -> dict[str, Any]:
        manifest = {
            "apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": "iris",
                     "variants": [{"name": "champion", "modelUri": "models:/iris@champion",
                                   "weight": 100, "replicas": 0}],
                     "retrain": {"alerts": list(alerts), "cooldown": cooldown,
                                 "maxConcurrent": max_concurrent,
                                 "template": template or TEMPLATE}},
        }
        out = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest))
        return json.loads(out.stdout)

    return make


@pytest.fixture
def trainingruns(kubectl: Callable[..., Any], namespace: str) -> Callable[[], list[dict]]:
    """The TrainingRuns in the test's namespace, as the API has them now."""

    def get() -> list[dict]:
        out = kubectl("get", "trainingruns", "-n", namespace, "-o", "json")
        return list(json.loads(out.stdout)["items"])

    return get


@pytest.fixture
def events(kubectl: Callable[..., Any], namespace: str) -> Callable[[str], list[dict]]:
    """Events of one ModelDeployment, by reason."""

    def get(deployment: str) -> list[dict]:
        out = kubectl("get", "events", "-n", namespace, "-o", "json",
                      f"--field-selector=involvedObject.name={deployment},"
                      "involvedObject.kind=ModelDeployment")
        return list(json.loads(out.stdout)["items"])

    return get
