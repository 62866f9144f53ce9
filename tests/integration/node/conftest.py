"""Fixtures for the node stand-in's integration tests: typed API handles and polling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import yaml

from mlops_localstack.cluster import poll

T = TypeVar("T")


@dataclass
class Kube:
    """The API groups the tests use, plus ``apply`` (YAML → kubectl) and ``wait_for``."""

    core: Any
    apps: Any
    batch: Any
    discovery: Any
    kubectl: Callable[..., Any]
    namespace: str

    def apply(self, manifest: str | dict | list) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(
            manifest if isinstance(manifest, list) else [manifest])
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)

    def pods(self, selector: str = "") -> list[Any]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    @staticmethod
    def wait_for(what: str, check: Callable[[], T], timeout: float = 60.0,
                 interval: float = 0.25) -> T:
        """Poll ``check`` until it returns something truthy; fail naming ``what``."""
        return poll(what, check, timeout=timeout, interval=interval)


@pytest.fixture
def kube(k8s_client: Any, kubectl: Callable[..., Any], namespace: str) -> Kube:
    from kubernetes import client

    return Kube(
        core=client.CoreV1Api(k8s_client),
        apps=client.AppsV1Api(k8s_client),
        batch=client.BatchV1Api(k8s_client),
        discovery=client.DiscoveryV1Api(k8s_client),
        kubectl=kubectl,
        namespace=namespace,
    )


@pytest.fixture
def local_node(node: Any) -> Any:
    """The session's node stand-in; these tests inspect its processes and log files."""
    if node is None:
        pytest.skip("needs the local stack's node stand-in (not a real kubelet)")
    return node


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def alive() -> Callable[[int], bool]:
    return pid_alive

