"""The node: lifecycle, heartbeats, pod watch, binding, and dispatch to one worker per pod."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from kubernetes import client

from .api import JSON, ApiException, PodWatch, WatchExpired, connect, raw
from .host import ApiPodHost, NodeSettings
from .ipam import IPAllocator, PodAddresses
from .registration import (
    NodeRegistration,
    default_capacity,
    node_labels,
    node_selector_matches,
)
from .runtime import (
    DEFAULT_IMAGE_ENTRYPOINTS,
    ImageEntrypoint,
    container_log,
    entrypoints_from_env,
    newest_pod_dir,
)
from .worker import PodWorker

log = logging.getLogger("mlops_localstack.node")

DEFAULT_SCHEDULERS = frozenset({"", "default-scheduler"})


class NodeStandIn:
    """A stand-in for kubelet + container runtime that runs pods as local processes.

    ``start()`` registers the Node and returns once it is Ready and the first pod list is
    done; everything else runs in background threads. ``stop()`` kills every pod process and
    returns promptly; pod statuses are left as they were (nothing is marked lost).
    """

    def __init__(
        self,
        kubeconfig: str | Path,
        workdir: Path,
        name: str = "mlops-local-node",
        python_prefix: Path | None = None,
        *,
        address_mode: str | None = None,
        ip_range: str | None = None,
        max_grace_period: float = 10.0,
        restart_backoff: float = 1.0,
        restart_backoff_max: float = 30.0,
        image_entrypoints: Mapping[str, ImageEntrypoint] | None = None,
        labels: Mapping[str, str] | None = None,
        capacity: Mapping[str, str] | None = None,
        strict_node_selector: bool = False,
        heartbeat_interval: float = 10.0,
    ) -> None:
        import sys

        self.kubeconfig = Path(kubeconfig)
        self.workdir = Path(workdir).absolute()
        self.pods_dir = self.workdir / "pods"
        self.name = name
        self.host_ip = "127.0.0.1"
        self.strict_node_selector = strict_node_selector
        self.heartbeat_interval = heartbeat_interval
        self.labels = node_labels(name, labels)
        self.capacity = dict(capacity or default_capacity())
        prefix = Path(python_prefix or sys.prefix).absolute()
        self.settings = NodeSettings(
            name=name, workdir=self.workdir, host_ip=self.host_ip, python_prefix=prefix,
            default_path=os.pathsep.join(
                [str(prefix / "bin"), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]),
            image_entrypoints={**DEFAULT_IMAGE_ENTRYPOINTS, **entrypoints_from_env(),
                               **(image_entrypoints or {})},
            allocatable=dict(self.capacity), max_grace_period=max_grace_period,
            restart_backoff=restart_backoff, restart_backoff_max=restart_backoff_max,
        )
        mode = address_mode or os.environ.get("MLOPS_LOCAL_ADDRESS_MODE") or "loopback"
        # start at a random point so two nodes on one machine rarely hand out the same address
        self.addresses = PodAddresses(mode, ip_range, start=random.random())
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._registered = threading.Event()
        self._listed = threading.Event()
        self._failure: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()
        self._cache: dict[str, JSON] = {}
        self._lock = threading.RLock()
        self._bind_wake = threading.Event()
        self._bind_attempts: dict[str, float] = {}
        self._warned_selector: set[str] = set()
        self.api: client.ApiClient | None = None
        self.host: ApiPodHost = None  # type: ignore[assignment]  # set by start()
        self.registration: NodeRegistration = None  # type: ignore[assignment]
        self.pod_watch: PodWatch = None  # type: ignore[assignment]

    @property
    def address_mode(self) -> str:
        return self.addresses.mode

    @property
    def ips(self) -> IPAllocator:
        return self.addresses.ips

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> NodeStandIn:
        """Register the node and start the background threads; wait until serving."""
        if self._threads:
            return self
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.api, endpoint = connect(self.kubeconfig)
        self.host = ApiPodHost(self.settings, self.api, endpoint, self.addresses, self._stopping,
                            on_finished=self._worker_finished)
        self.registration = NodeRegistration(self.api, self.name, self.labels, self.capacity,
                                             self.host_ip)
        self.pod_watch = PodWatch(client.CoreV1Api(self.api))
        self._stopping.clear()
        for target, tname in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "pod-watch"),
                              (self._bind_loop, "binder")):
            thread = threading.Thread(target=target, name=f"{self.name}-{tname}", daemon=True)
            self._threads.append(thread)
            thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self._failure is not None:
                self.stop()
                raise RuntimeError(f"node stand-in failed to start: {self._failure}") from (
                    self._failure)
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"node {self.name} did not become ready in {timeout:g}s")
        log.info("node %s ready (pods in %s, %s addresses from %s)", self.name, self.pods_dir,
                 self.address_mode, self.addresses.network)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Kill every pod process (SIGTERM, ``grace`` seconds, SIGKILL) and stop the threads."""
        self._stopping.set()
        self._bind_wake.set()
        with self._lock:
            workers = list(self._workers.values())
        killers = [threading.Thread(target=w.kill_all, args=(grace,), daemon=True)
                   for w in workers]
        for thread in killers:
            thread.start()
        for worker in workers:
            worker.wake.set()
        for thread in killers:
            thread.join(grace + 6)
        if self.pod_watch is not None:
            self.pod_watch.stop()  # wakes the watch thread blocked on its socket, at once
        for thread in workers + self._threads:
            thread.join(timeout=1.0 if thread.name.endswith("pod-watch") else 2.0)
        self.addresses.remove_all()
        if self.api is not None:
            self.api.close()
        self._threads = []
        self._ready.clear()
        self._registered.clear()
        self._listed.clear()

    def run_forever(self) -> None:
        """Start and block until interrupted (SIGINT/SIGTERM), then stop."""
        import signal

        done = threading.Event()

        def _handler(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping node %s", signum, self.name)
            done.set()

        previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not done.wait(1.0):
                if self._failure is not None:
                    raise RuntimeError(f"node stand-in failed: {self._failure}")
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> NodeStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for tests and the CLI ----------------------------------------------------------
    def pod_dir(self, namespace: str, pod: str) -> Path | None:
        """The newest local directory of pod ``namespace/pod`` (logs, volumes, work dirs)."""
        return newest_pod_dir(self.pods_dir, namespace, pod)

    def logs(
        self, namespace: str, pod: str, container: str | None = None, tail: int | None = None
    ) -> str:
        """A container's log (all runs, appended), like ``kubectl logs`` without a kubelet API."""
        pdir = self.pod_dir(namespace, pod)
        if pdir is None:
            raise FileNotFoundError(f"no pod {namespace}/{pod} ran on node {self.name}")
        return container_log(pdir, container, tail)

    def running_pids(self) -> dict[str, list[int]]:
        """``namespace/name`` → pids of the pod's live container processes."""
        out: dict[str, list[int]] = {}
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            pids = [r.proc.pid for r in w.init_runs + w.runs if r.proc is not None]
            if pids:
                out[f"{w.namespace}/{w.pod_name}"] = pids
        return out

    def _worker_finished(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)
            if not self._stopping.is_set():
                self._finished.add(uid)

    # -- node registration and heartbeats -------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        registered = False
        last_status = 0.0
        while not self._stopping.is_set():
            try:
                if not registered:
                    self.registration.register()
                    registered = True
                    self._registered.set()
                    last_status = time.monotonic()
                    self._bind_wake.set()
                else:
                    self.registration.renew_lease()
                    if time.monotonic() - last_status >= 2 * self.heartbeat_interval:
                        self.registration.post_status()
                        last_status = time.monotonic()
                if registered and self._listed.is_set():
                    self._ready.set()
            except ApiException as exc:
                if self._stopping.is_set():
                    return
                if not registered and exc.status in (401, 403, 422):
                    self._failure = exc
                    return
                log.warning("node heartbeat failed: %s", exc)
            except Exception as exc:  # noqa: BLE001
                if self._stopping.is_set():
                    return
                log.exception("node heartbeat crashed")
                if not registered:
                    self._failure = exc
                    return
            wait = 0.1 if registered and not self._ready.is_set() else self.heartbeat_interval
            if not registered:
                wait = 1.0
            self._stopping.wait(wait)

    # -- pods: watch, bind, dispatch -------------------------------------------------------------
    def _watch_loop(self) -> None:
        rv: str | None = None
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                if rv is None:
                    items, rv = self.pod_watch.list_all()
                    self._sync(items)
                    self._listed.set()
                for event in self.pod_watch.events(rv, timeout_seconds=55):
                    if self._stopping.is_set():
                        return
                    obj = event.get("object") or {}
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if event.get("type") != "BOOKMARK":
                        self._dispatch(event["type"], obj)
                backoff = 0.2
            except WatchExpired:
                log.info("pod watch expired (410 Gone); re-listing")
                rv = None
            except Exception as exc:  # noqa: BLE001 - never let the watch die
                if self._stopping.is_set():
                    return
                log.warning("pod watch failed (%s); retrying in %.1fs", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                if isinstance(exc, ApiException) and exc.status in (401, 403) and not self._ready.is_set():
                    self._failure = exc
                    return

    def _sync(self, items: list[JSON]) -> None:
        seen = set()
        for pod in items:
            seen.add(pod["metadata"]["uid"])
            self._dispatch("MODIFIED", pod)
        with self._lock:
            vanished = [uid for uid in self._cache if uid not in seen]
        for uid in vanished:
            with self._lock:
                pod = self._cache.get(uid)
            if pod is not None:
                self._dispatch("DELETED", pod)

    def _dispatch(self, kind: str, pod: JSON) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        with self._lock:
            if kind == "DELETED":
                self._cache.pop(uid, None)
                self._bind_attempts.pop(uid, None)
                worker = self._workers.get(uid)
                if worker is not None:
                    worker.deleted()
                return
            self._cache[uid] = pod
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not node_name:
                self._bind_wake.set()
                return
            if node_name != self.name:
                self._cache.pop(uid, None)
                return
            worker = self._workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            if uid in self._finished or self._stopping.is_set():
                return
            worker = PodWorker(self.host, pod)
            self._workers[uid] = worker
        worker.start()

    def _bindable(self, pod: JSON) -> bool:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        if spec.get("nodeName") or meta.get("deletionTimestamp"):
            return False
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return False
        if (spec.get("schedulerName") or "") not in DEFAULT_SCHEDULERS:
            return False
        if spec.get("schedulingGates"):
            return False
        if not node_selector_matches(pod, self.labels):
            if self.strict_node_selector:
                return False
            key = meta.get("uid", "")
            if key not in self._warned_selector:
                self._warned_selector.add(key)
                log.warning("pod %s/%s: nodeSelector %s does not match node %s; binding anyway "
                            "(strict_node_selector=False)", meta.get("namespace"),
                            meta.get("name"), spec.get("nodeSelector"), self.name)
        return True

    def _bind_loop(self) -> None:
        while not self._stopping.is_set():
            self._bind_wake.wait(1.0)
            self._bind_wake.clear()
            if self._stopping.is_set() or not self._registered.is_set():
                continue
            with self._lock:
                pending = [p for p in self._cache.values() if self._bindable(p)]
            now = time.monotonic()
            for pod in pending:
                uid = pod["metadata"]["uid"]
                if now - self._bind_attempts.get(uid, -1e9) < 1.0:
                    continue
                self._bind_attempts[uid] = now
                self._bind(pod)

    def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        try:
            raw(self.host.core.create_namespaced_binding, meta["namespace"], body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return  # gone, or bound meanwhile
            log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], exc)
            self._bind_wake.set()
            return
        log.info("bound pod %s/%s to %s", meta["namespace"], meta["name"], self.name)
        self.host.event(pod, "Scheduled",
                   f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.name}")

