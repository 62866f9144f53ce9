"""The node: registration, lease, pod watch, binding, and the pod workers' shared services."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .envs import JSON
from .ipam import IPAllocator, LoopbackAliases, can_manage_aliases
from .kube import ApiError, Connection, KubeClient, WatchExpired, retry_on_conflict
from .runtime import DEFAULT_IMAGE_ENTRYPOINTS, ImageEntrypoint
from .status import rfc3339, rfc3339_micro
from .worker import PodWorker

log = logging.getLogger("mlops_localstack.node")

NODE_LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.34.4-mlops-local"
#: Taints the node lifecycle controller manages; a restarted node clears stale ones at once.
LIFECYCLE_TAINT_PREFIX = "node.kubernetes.io/"
DEFAULT_SCHEDULERS = frozenset({"", "default-scheduler"})


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3


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

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
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
            "architecture": arch,
        },
    }


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def node_selector_matches(pod: JSON, labels: Mapping[str, str]) -> bool:
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    return all(labels.get(k) == v for k, v in selector.items())


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
        self.python_prefix = Path(python_prefix or sys.prefix).absolute()
        self.host_ip = "127.0.0.1"
        self.max_grace_period = max_grace_period
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.strict_node_selector = strict_node_selector
        self.heartbeat_interval = heartbeat_interval
        table = dict(DEFAULT_IMAGE_ENTRYPOINTS)
        table.update(_entrypoints_from_env())
        table.update(image_entrypoints or {})
        self.image_entrypoints = table
        self.labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": platform.system().lower(),
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()),
            "node.kubernetes.io/instance-type": "mlops-local",
            "mlops.dev/local-node": "true",
            **(labels or {}),
        }
        self.capacity = dict(capacity or {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_bytes() // 1024}Ki",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        })
        self.allocatable = dict(self.capacity)
        self.default_path = os.pathsep.join(
            [str(self.python_prefix / "bin"), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]
        )
        address_mode = address_mode or os.environ.get("MLOPS_LOCAL_ADDRESS_MODE") or "loopback"
        if address_mode not in ("auto", "alias", "loopback"):
            raise ValueError(f"address_mode must be auto, alias or loopback, not {address_mode!r}")
        if address_mode == "auto":  # opt-in: alias changes the host's `lo`
            address_mode = "alias" if can_manage_aliases() else "loopback"
        self.address_mode = address_mode
        self.aliases = LoopbackAliases() if address_mode == "alias" else None
        default_range = "198.18.0.0/16" if self.aliases else "127.10.0.0/16"
        self.ips = IPAllocator(ip_range or default_range, require_loopback=self.aliases is None)
        # start at a random point so two nodes on one machine rarely hand out the same address
        self.ips.seek(random.random())
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
        self.conn: Connection | None = None  # type: ignore[assignment]
        self.client: KubeClient = None  # type: ignore[assignment]
        self.ca_path: Path | None = None
        self.ca_bytes: bytes | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> NodeStandIn:
        """Register the node and start the background threads; wait until serving."""
        if self._threads:
            return self
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.conn = Connection.from_kubeconfig(self.kubeconfig)
        self.client = KubeClient(self.conn)
        if self.conn.ca_file:
            self.ca_path = Path(self.conn.ca_file)
            self.ca_bytes = self.ca_path.read_bytes()
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
                 self.address_mode, self.ips.network)
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
        if self.client is not None:
            self.client.close()
        for thread in workers + self._threads:
            thread.join(timeout=1.0 if thread.name.endswith("pod-watch") else 2.0)
        if self.aliases is not None:
            self.aliases.remove_all()
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

    @property
    def api_host_port(self) -> tuple[str, int]:
        assert self.conn is not None
        return self.conn.host_port

    # -- helpers for tests and the CLI ----------------------------------------------------------
    def pod_dir(self, namespace: str, pod: str) -> Path | None:
        """The newest local directory of pod ``namespace/pod`` (logs, volumes, work dirs)."""
        dirs = sorted(self.pods_dir.glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
        return dirs[-1] if dirs else None

    def logs(
        self, namespace: str, pod: str, container: str | None = None, tail: int | None = None
    ) -> str:
        """A container's log (all runs, appended), like ``kubectl logs`` without a kubelet API."""
        pdir = self.pod_dir(namespace, pod)
        if pdir is None:
            raise FileNotFoundError(f"no pod {namespace}/{pod} ran on node {self.name}")
        if container is None:
            try:
                spec = json.loads((pdir / "pod.json").read_text())["spec"]
                container = spec["containers"][0]["name"]
            except (OSError, KeyError, IndexError, ValueError):
                logs = sorted(pdir.glob("*.log"))
                if not logs:
                    return ""
                container = logs[0].stem
        path = pdir / f"{container}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        return text

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

    # -- services for pod workers --------------------------------------------------------------
    def lookup(self, kind: str, namespace: str, name: str) -> JSON | None:
        """GET a ConfigMap or Secret (None when it does not exist)."""
        obj = self.client.get_or_none(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
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
        resp = self.client.post(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
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
            "source": {"component": "kubelet", "host": self.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.client.request("POST", f"/api/v1/namespaces/{meta.get('namespace')}/events",
                                body=body, retry=False)
        except ApiError as exc:
            log.debug("event %s for %s failed: %s", reason, meta.get("name"), exc)

    def _allocate_ip(self, uid: str, previous: str | None) -> str:
        if self.aliases is None:
            if previous and self.ips.reserve(previous, uid):
                return previous
            return self.ips.allocate(uid)
        taken = self.aliases.present()
        if previous and previous not in taken and self.ips.reserve(previous, uid):
            candidates = [previous]
        else:
            candidates = []
        for _ in range(5):
            ip = candidates.pop() if candidates else self.ips.allocate(uid, exclude=taken)
            try:
                self.aliases.add(ip)
                return ip
            except OSError as exc:  # taken meanwhile by another node on this machine
                log.warning("%s; trying another address", exc)
                self.ips.release(uid)
                taken.add(ip)
        raise OSError("could not add a pod address to lo")

    def _delete_pod_now(self, pod: JSON) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}
        try:
            self.client.delete(path, body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod %s/%s failed: %s", meta["namespace"], meta["name"], exc)

    def _worker_finished(self, worker: PodWorker) -> None:
        with self._lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]
            if not self._stopping.is_set():
                self._finished.add(worker.uid)
        self._release_ip(worker.uid)

    def _release_ip(self, uid: str) -> None:
        if self.aliases is not None:
            for ip, owner in self.ips.in_use().items():
                if owner == uid:
                    self.aliases.remove(ip)
        self.ips.release(uid)

    # -- node registration and heartbeats -------------------------------------------------------
    def _register(self) -> None:
        client = self.client
        try:
            client.post("/api/v1/nodes", node_manifest(self.name, self.labels))
        except ApiError as exc:
            if exc.status != 409:
                raise
        current = client.get(f"/api/v1/nodes/{self.name}")
        taints = [t for t in (current.get("spec") or {}).get("taints") or []
                  if not str(t.get("key", "")).startswith(LIFECYCLE_TAINT_PREFIX)]
        client.patch(f"/api/v1/nodes/{self.name}", {
            "metadata": {"labels": self.labels},
            "spec": {"taints": taints or None, "unschedulable": None},
        })
        self._post_node_status()
        if client.get_or_none(f"/api/v1/namespaces/{NODE_LEASE_NAMESPACE}") is None:
            with contextlib.suppress(ApiError):
                client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": NODE_LEASE_NAMESPACE}})
        self._renew_lease()

    def _post_node_status(self) -> None:
        current = self.client.get(f"/api/v1/nodes/{self.name}")
        status = node_status(self.name, self.capacity, self.host_ip, current.get("status"))
        self.client.patch(f"/api/v1/nodes/{self.name}/status", {"status": status})

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases/{self.name}"
        node = self.client.get(f"/api/v1/nodes/{self.name}")

        def renew() -> JSON | None:
            lease = self.client.get_or_none(path)
            spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                    "renewTime": rfc3339_micro()}
            if lease is None:
                return self.client.post(
                    f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases",
                    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": NODE_LEASE_NAMESPACE,
                                  "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                       "name": self.name,
                                                       "uid": node["metadata"]["uid"]}]},
                     "spec": spec},
                )
            lease["spec"] = {**(lease.get("spec") or {}), **spec}
            return self.client.put(path, lease)

        retry_on_conflict(renew)

    def _heartbeat_loop(self) -> None:
        registered = False
        last_status = 0.0
        while not self._stopping.is_set():
            try:
                if not registered:
                    self._register()
                    registered = True
                    self._registered.set()
                    last_status = time.monotonic()
                    self._bind_wake.set()
                else:
                    self._renew_lease()
                    if time.monotonic() - last_status >= 2 * self.heartbeat_interval:
                        self._post_node_status()
                        last_status = time.monotonic()
                if registered and self._listed.is_set():
                    self._ready.set()
            except ApiError as exc:
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
                    items, rv = self.client.list_all("/api/v1/pods")
                    self._sync(items)
                    self._listed.set()
                for event in self.client.watch("/api/v1/pods", rv, timeout_seconds=55):
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
                if isinstance(exc, ApiError) and exc.status in (401, 403) and not self._ready.is_set():
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
            worker = PodWorker(self, pod)
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
            self.client.post(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                             body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return  # gone, or bound meanwhile
            log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], exc)
            self._bind_wake.set()
            return
        log.info("bound pod %s/%s to %s", meta["namespace"], meta["name"], self.name)
        self.event(pod, "Scheduled",
                   f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.name}")


def _entrypoints_from_env() -> dict[str, ImageEntrypoint]:
    """``MLOPS_LOCAL_IMAGE_ENTRYPOINTS='{"repo/img": {"entrypoint": [..], "cmd": [..]}}'``."""
    raw = os.environ.get("MLOPS_LOCAL_IMAGE_ENTRYPOINTS")
    if not raw:
        return {}
    table: dict[str, ImageEntrypoint] = {}
    for pattern, value in json.loads(raw).items():
        if isinstance(value, list):
            table[pattern] = ImageEntrypoint(tuple(value), ())
        else:
            table[pattern] = ImageEntrypoint(tuple(value.get("entrypoint") or ()),
                                             tuple(value.get("cmd") or ()))
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops_localstack.node --kubeconfig K --workdir D``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mlops_localstack.node",
        description="Run the local node stand-in (kubelet + container runtime as local processes).",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--name", default="mlops-local-node")
    parser.add_argument("--python-prefix", type=Path, default=None)
    parser.add_argument("--address-mode", choices=["auto", "alias", "loopback"], default=None,
                        help="pod addresses: /32 aliases on lo (EndpointSlices work; needs "
                        "CAP_NET_ADMIN) or 127.x (no privileges, the default); auto picks alias when possible")
    parser.add_argument("--ip-range", default=None,
                        help="pod address range (default 198.18.0.0/16 or 127.10.0.0/16)")
    parser.add_argument("--release-addresses", action="store_true",
                        help="remove leftover pod addresses (label lo:mlops) from lo and exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.release_addresses:
        print(f"removed {LoopbackAliases().flush_label()} address(es) from lo")
        return 0
    if not args.kubeconfig or not args.workdir:
        parser.error("--kubeconfig (or $KUBECONFIG) and --workdir are required")
    NodeStandIn(args.kubeconfig, args.workdir, name=args.name, python_prefix=args.python_prefix,
                address_mode=args.address_mode, ip_range=args.ip_range).run_forever()
    return 0
