"""The Node object, its status and its lease: what the stand-in registers and renews."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path

from kubernetes import client

from .api import JSON, MERGE_PATCH, ApiException, get_or_none, raw, retry_on_conflict
from .status import rfc3339, rfc3339_micro

NODE_LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.34.4-mlops-local"
#: Taints the node lifecycle controller manages; a restarted node clears stale ones at once.
LIFECYCLE_TAINT_PREFIX = "node.kubernetes.io/"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def node_labels(name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels a kubelet puts on its Node, plus ours (``extra`` wins)."""
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": platform.system().lower(),
        "kubernetes.io/arch": ARCH,
        "node.kubernetes.io/instance-type": "mlops-local",
        "mlops.dev/local-node": "true",
        **(extra or {}),
    }


def default_capacity() -> dict[str, str]:
    """This machine's CPUs and memory, 110 pods, 100Gi ephemeral storage."""
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_bytes() // 1024}Ki",
        "pods": "110",
        "ephemeral-storage": "100Gi",
    }


def node_manifest(name: str, labels: Mapping[str, str]) -> JSON:
    """The Node object registered by the stand-in (spec and metadata only)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": dict(labels),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "mlops.dev/node-stand-in": "true"},
        },
        "spec": {},
    }


def node_status(
    name: str, capacity: Mapping[str, str], host_ip: str, previous: JSON | None = None,
    now: str | None = None,
) -> JSON:
    """A Ready node status; ``lastTransitionTime`` kept from ``previous`` while unchanged."""
    now = now or rfc3339()
    prev = {c.get("type"): c for c in (previous or {}).get("conditions") or []}

    def cond(ctype: str, status: str, reason: str, message: str) -> JSON:
        old = prev.get(ctype) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since or now}

    return {
        "capacity": dict(capacity),
        "allocatable": dict(capacity),
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                 "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure",
                 "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID",
                 "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "mlops local node stand-in is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": host_ip},
                      {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).hex,
            "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "bootID": _boot_id(),
            "kernelVersion": platform.release(),
            "osImage": f"mlops local node stand-in ({platform.system()})",
            "containerRuntimeVersion": "local://0.1.0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": platform.system().lower(),
            "architecture": ARCH,
        },
    }


def node_selector_matches(pod: JSON, labels: Mapping[str, str]) -> bool:
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class NodeRegistration:
    """Registers the Node, posts its Ready status and renews its Lease."""

    def __init__(
        self, api: client.ApiClient, name: str, labels: Mapping[str, str],
        capacity: Mapping[str, str], host_ip: str,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.name, self.labels, self.capacity, self.host_ip = name, labels, capacity, host_ip

    def register(self) -> None:
        """Create (or adopt) the Node, clear stale lifecycle taints, post status and lease."""
        try:
            raw(self.core.create_node, node_manifest(self.name, self.labels))
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = raw(self.core.read_node, self.name)
        taints = [t for t in (current.get("spec") or {}).get("taints") or []
                  if not str(t.get("key", "")).startswith(LIFECYCLE_TAINT_PREFIX)]
        raw(self.core.patch_node, self.name, {
            "metadata": {"labels": dict(self.labels)},
            "spec": {"taints": taints or None, "unschedulable": None},
        }, _content_type=MERGE_PATCH)
        self.post_status()
        if get_or_none(self.core.read_namespace, NODE_LEASE_NAMESPACE) is None:
            with contextlib.suppress(ApiException):
                raw(self.core.create_namespace, {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": NODE_LEASE_NAMESPACE}})
        self.renew_lease()

    def post_status(self) -> None:
        current = raw(self.core.read_node, self.name)
        status = node_status(self.name, self.capacity, self.host_ip, current.get("status"))
        raw(self.core.patch_node_status, self.name, {"status": status},
            _content_type=MERGE_PATCH)

    def renew_lease(self) -> None:
        node = raw(self.core.read_node, self.name)

        def renew() -> JSON | None:
            lease = get_or_none(self.leases.read_namespaced_lease, self.name, NODE_LEASE_NAMESPACE)
            spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                    "renewTime": rfc3339_micro()}
            if lease is None:
                owner = {"apiVersion": "v1", "kind": "Node", "name": self.name,
                         "uid": node["metadata"]["uid"]}
                return raw(self.leases.create_namespaced_lease, NODE_LEASE_NAMESPACE, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": NODE_LEASE_NAMESPACE,
                                 "ownerReferences": [owner]},
                    "spec": spec,
                })
            lease["spec"] = {**(lease.get("spec") or {}), **spec}
            return raw(self.leases.replace_namespaced_lease, self.name, NODE_LEASE_NAMESPACE,
                       lease)

        retry_on_conflict(renew)
