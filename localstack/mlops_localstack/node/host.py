"""What a pod worker is handed by its node: settings, the API for its pod, addresses, events.

The worker never sees the :class:`~.standin.NodeStandIn`; it gets a :class:`PodHost` (the
interface, which a test can fake) — in the stand-in an :class:`ApiPodHost` — so the stand-in
(registration, watch, binding) and the worker (one pod's life) depend on this module, not on
each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubernetes import client

from .api import JSON, MERGE_PATCH, ApiException, Endpoint, get_or_none, raw
from .ipam import PodAddresses
from .runtime import ImageEntrypoint
from .status import rfc3339

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSettings:
    """The node's fixed facts and knobs, as the pod workers need them."""

    name: str
    workdir: Path
    host_ip: str
    python_prefix: Path
    default_path: str
    image_entrypoints: Mapping[str, ImageEntrypoint]
    allocatable: Mapping[str, str]
    max_grace_period: float
    restart_backoff: float
    restart_backoff_max: float

    @property
    def pods_dir(self) -> Path:
        return self.workdir / "pods"


class PodHost(Protocol):
    """Everything a pod worker uses of its node."""

    settings: NodeSettings
    endpoint: Endpoint
    #: set when the node stops: workers stop starting and restarting containers
    stopping: threading.Event
    #: the cluster CA, for service-account volumes when the API server's CA file is missing
    ca_bytes: bytes | None

    def lookup(self, kind: str, namespace: str, name: str) -> JSON | None: ...
    def request_token(self, pod: JSON, audience: str | None, expiration: int) -> str: ...
    def event(self, pod: JSON, reason: str, message: str, warning: bool = False) -> None: ...
    def read_pod(self, namespace: str, name: str) -> JSON | None: ...
    def patch_pod_status(self, namespace: str, name: str, body: JSON) -> JSON: ...
    def delete_pod_now(self, pod: JSON) -> None: ...
    def allocate_ip(self, uid: str, previous: str | None) -> str: ...
    def finished(self, uid: str) -> None: ...


class ApiPodHost:
    """The stand-in's :class:`PodHost`: the API server, the node's addresses (thread-safe)."""

    def __init__(
        self, settings: NodeSettings, api: client.ApiClient, endpoint: Endpoint,
        addresses: PodAddresses, stopping: threading.Event,
        on_finished: Callable[[str], None] = lambda uid: None,
    ) -> None:
        self.settings = settings
        self.core = client.CoreV1Api(api)
        self.endpoint = endpoint
        self.addresses = addresses
        self.stopping = stopping
        self._on_finished = on_finished
        self.ca_bytes = endpoint.ca_file.read_bytes() if endpoint.ca_file else None

    # -- the API, for one pod ---------------------------------------------------------------------
    def lookup(self, kind: str, namespace: str, name: str) -> JSON | None:
        """GET a ConfigMap or Secret (None when it does not exist)."""
        read = (self.core.read_namespaced_secret if kind == "secrets"
                else self.core.read_namespaced_config_map)
        obj = get_or_none(read, name, namespace)
        if obj is not None:
            obj.setdefault("kind", "Secret" if kind == "secrets" else "ConfigMap")
        return obj

    def request_token(self, pod: JSON, audience: str | None, expiration: int) -> str:
        """A bound service-account token for ``pod`` (TokenRequest API)."""
        meta = pod["metadata"]
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        spec: JSON = {
            "expirationSeconds": max(600, int(expiration)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "uid": meta["uid"]},
        }
        if audience:
            spec["audiences"] = [audience]
        resp = raw(self.core.create_namespaced_service_account_token, sa, meta["namespace"],
                   {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": spec})
        return str(resp["status"]["token"])

    def event(self, pod: JSON, reason: str, message: str, warning: bool = False) -> None:
        """Record a core/v1 Event on the pod (best effort)."""
        meta = pod.get("metadata") or {}
        now = rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"),
                               "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self.settings.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.settings.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            raw(self.core.create_namespaced_event, meta.get("namespace"), body)
        except ApiException as exc:
            log.debug("event %s for %s failed: %s", reason, meta.get("name"), exc)

    def read_pod(self, namespace: str, name: str) -> JSON | None:
        return get_or_none(self.core.read_namespaced_pod, name, namespace)

    def patch_pod_status(self, namespace: str, name: str, body: JSON) -> JSON:
        """A merge patch of ``pods/status`` (``body`` may carry a resourceVersion precondition)."""
        return raw(self.core.patch_namespaced_pod_status, name, namespace, body,
                   _content_type=MERGE_PATCH)

    def delete_pod_now(self, pod: JSON) -> None:
        """Delete the pod with grace 0 and a UID precondition, as the kubelet does."""
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}
        try:
            raw(self.core.delete_namespaced_pod, meta["name"], meta["namespace"], body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod %s/%s failed: %s", meta["namespace"], meta["name"], exc)

    # -- addresses and bookkeeping --------------------------------------------------------------
    def allocate_ip(self, uid: str, previous: str | None) -> str:
        return self.addresses.allocate(uid, previous)

    def finished(self, uid: str) -> None:
        """The worker of pod ``uid`` has ended: free its address, tell the node."""
        self._on_finished(uid)
        self.addresses.release(uid)
