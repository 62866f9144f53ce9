"""Upstream endpoints from Kubernetes EndpointSlices (label ``kubernetes.io/service-name``).

Only endpoints whose ``conditions.ready`` is true are used. Works against any API server: a real
cluster (in-cluster config) or the local stack (KUBECONFIG), where the endpointslice controller
fills the slices from the pods the node stand-in runs.

The API server refuses loopback addresses in EndpointSlices, so when the local stack gives pods
127.x addresses their Services have empty slices. For that case (and only when the slices hold
no ready endpoint) discovery falls back to the Service's selector: Ready pods and their
``status.podIP``, with the Service's ``targetPort``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace(default: str = "default") -> str:
    """The pod's namespace (service-account mount or ``POD_NAMESPACE``), else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(_NAMESPACE_FILE, encoding="utf-8") as fh:
            return fh.read().strip() or default
    except OSError:
        return default


def _get(obj: Any, *names: str) -> Any:
    """Attribute or dict access, so both client objects and plain dicts (tests) work."""
    for name in names:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def endpoints_from_slices(slices: Iterable[Any], port: int | str | None = None) -> list[str]:
    """``http://addr:port`` URLs of the ready endpoints in ``slices``, sorted and deduplicated.

    ``port`` is a number or a port name in the slice; by default the slice's first port.
    """
    urls: set[str] = set()
    for item in slices:
        ports = _get(item, "ports") or []
        number = None
        if isinstance(port, int):
            number = port
        else:
            for p in ports:
                if port is None or _get(p, "name") == port:
                    number = _get(p, "port")
                    break
        if number is None:
            continue
        ipv6 = _get(item, "address_type") == "IPv6" or _get(item, "addressType") == "IPv6"
        for endpoint in _get(item, "endpoints") or []:
            if _get(endpoint, "conditions", "ready") is not True:
                continue
            for address in _get(endpoint, "addresses") or []:
                host = f"[{address}]" if ipv6 else address
                urls.add(f"http://{host}:{number}")
    return sorted(urls)


def _pod_ready(pod: Any) -> bool:
    if _get(pod, "metadata", "deletion_timestamp") or not _get(pod, "status", "pod_ip"):
        return False
    return any(
        _get(c, "type") == "Ready" and _get(c, "status") == "True"
        for c in _get(pod, "status", "conditions") or []
    )


def _container_port(pod: Any, name: str) -> int | None:
    for container in _get(pod, "spec", "containers") or []:
        for p in _get(container, "ports") or []:
            if _get(p, "name") == name:
                return _get(p, "container_port")
    return None


def endpoints_from_pods(
    service: Any, pods: Iterable[Any], port: int | str | None = None
) -> list[str]:
    """``http://podIP:targetPort`` URLs of the Ready pods selected by ``service``."""
    target: int | str | None = port if isinstance(port, int) else None
    if target is None:
        for p in _get(service, "spec", "ports") or []:
            if port is None or _get(p, "name") == port:
                target = _get(p, "target_port") or _get(p, "port")
                break
    if target is None:
        return []
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    urls: set[str] = set()
    for pod in pods:
        if not _pod_ready(pod):
            continue
        number: Any = target if isinstance(target, int) else _container_port(pod, target)
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if isinstance(number, int):
            urls.add(f"http://{_get(pod, 'status', 'pod_ip')}:{number}")
    return sorted(urls)


def _load_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class EndpointSliceDiscovery:
    """Lists EndpointSlices (and, if they are empty, Ready pods) through the ``kubernetes``
    client. Blocking: call it in a thread."""

    def __init__(self, api: Any = None, core_api: Any = None, pod_fallback: bool = True) -> None:
        self._api = api
        self._core = core_api
        self.pod_fallback = pod_fallback

    def _discovery_api(self) -> Any:
        if self._api is None:
            from kubernetes import client

            _load_config()
            self._api = client.DiscoveryV1Api()
        return self._api

    def _core_api(self) -> Any:
        if self._core is None:
            from kubernetes import client

            _load_config()
            self._core = client.CoreV1Api()
        return self._core

    def endpoints(self, namespace: str, service: str, port: int | str | None = None) -> list[str]:
        """Ready endpoint URLs of ``service`` in ``namespace``."""
        result = self._discovery_api().list_namespaced_endpoint_slice(
            namespace, label_selector=f"{SERVICE_LABEL}={service}", _request_timeout=10
        )
        urls = endpoints_from_slices(result.items, port)
        if urls or not self.pod_fallback:
            return urls
        return self._from_pods(namespace, service, port)

    def _from_pods(self, namespace: str, service: str, port: int | str | None) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        core = self._core_api()
        try:
            svc = core.read_namespaced_service(service, namespace, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        selector = _get(svc, "spec", "selector") or {}
        if not selector:
            return []
        pods = core.list_namespaced_pod(
            namespace, label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            _request_timeout=10,
        )  # fmt: skip
        return endpoints_from_pods(svc, pods.items, port)


def read_configmap(namespace: str, name: str, key: str, api: Any = None) -> str:
    """The text under ``key`` in a ConfigMap (blocking)."""
    if api is None:
        from kubernetes import client

        _load_config()
        api = client.CoreV1Api()
    cm = api.read_namespaced_config_map(name, namespace, _request_timeout=10)
    data = cm.data or {}
    if key not in data:
        raise KeyError(f"ConfigMap {namespace}/{name} has no key {key!r}")
    return data[key]
