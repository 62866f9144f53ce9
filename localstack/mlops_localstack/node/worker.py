"""One thread per pod: sandbox, the pod's life (containers in ``containers.py``), status, deletion."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from .api import ApiException
from .containers import ContainerProcesses, ContainerRun
from .envs import EnvError
from .host import PodHost
from .status import (
    OWN_CONDITIONS,
    TERMINAL_PHASES,
    ConditionInputs,
    ContainerView,
    comparable,
    compute_phase,
    container_status,
    desired_conditions,
    merge_conditions,
    readiness_gates_false,
    rfc3339,
)
from .volumes import (
    VolumeError,
    Volumes,
    materialize_volumes,
)

log = logging.getLogger(__name__)
JSON = dict[str, Any]

#: How often a pod worker looks at its processes while any is running (seconds).
POLL_INTERVAL = 0.25


def _rv(obj: JSON) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class PodWorker(ContainerProcesses, threading.Thread):
    """Runs one pod bound to the node until it is deleted (or the node stops)."""

    def __init__(self, host: PodHost, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.host = host
        self.settings = host.settings
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.dir: Path = host.settings.pods_dir / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self._pod = pod
        self._lock = threading.Lock()
        self._proc_lock = threading.RLock()  # processes change only under this lock
        self.wake = threading.Event()
        self.gone = False
        self.ip: str | None = None
        self.start_time: float | None = None
        self.sandbox_ready = False
        self.sandbox_message = ""
        self.volumes: Volumes | None = None
        self.token_refresh_at: float | None = None
        self.terminal_phase: str | None = None
        self.reason = ""
        self.message = ""
        self._own_conditions: list[JSON] = []
        self._last_pushed: JSON | None = None
        spec = pod.get("spec") or {}
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.init_runs = [self._new_run(c, True, pod) for c in spec.get("initContainers") or []]
        self.runs = [self._new_run(c, False, pod) for c in spec.get("containers") or []]
        self.init_index = 0
        phase = (pod.get("status") or {}).get("phase")
        if phase in TERMINAL_PHASES:
            # finished before this node (re)started: nothing to run, keep what is reported
            self.terminal_phase = phase
            self._last_pushed = comparable(pod.get("status") or {})

    @staticmethod
    def _new_run(spec: JSON, init: bool, pod: JSON) -> ContainerRun:
        key = "initContainerStatuses" if init else "containerStatuses"
        previous = next(
            (s for s in (pod.get("status") or {}).get(key) or [] if s.get("name") == spec["name"]),
            {},
        )
        view = ContainerView(name=spec["name"], image=str(spec.get("image") or ""),
                             restart_count=int(previous.get("restartCount") or 0))
        if view.restart_count and (previous.get("state") or {}).get("running"):
            view.restart_count += 1  # it was running under the previous node process
        return ContainerRun(spec=spec, init=init, view=view)

    # -- inputs from the node -------------------------------------------------------------------
    @property
    def pod(self) -> JSON:
        with self._lock:
            return self._pod

    def update(self, pod: JSON) -> None:
        with self._lock:
            if _rv(pod) >= _rv(self._pod):
                self._pod = pod
        self.wake.set()

    def deleted(self) -> None:
        self.gone = True
        self.wake.set()

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - a bug here must not take the node down
            log.exception("pod worker %s/%s crashed", self.namespace, self.pod_name)
        finally:
            self.kill_all(grace=0.0)
            self.host.finished(self.uid)

    def _loop(self) -> None:
        stopping = self.host.stopping
        while not stopping.is_set():
            self.wake.clear()
            pod = self.pod
            if self.gone:
                log.info("pod %s/%s removed from the API", self.namespace, self.pod_name)
                return
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                with self._proc_lock:
                    self._terminate(pod)
                return
            if self.terminal_phase is None:
                try:
                    with self._proc_lock:
                        if not stopping.is_set():
                            self._step(pod)
                except ApiException as exc:
                    log.warning("pod %s/%s: API error: %s", self.namespace, self.pod_name, exc)
                except Exception:  # noqa: BLE001 - keep managing the pod; retry shortly
                    log.exception("pod %s/%s: step failed", self.namespace, self.pod_name)
                    stopping.wait(1.0)
            if not stopping.is_set():
                self._push_status()
            self.wake.wait(self._next_wake())

    def _next_wake(self) -> float:
        if self.terminal_phase is not None:
            return 5.0
        now = time.time()
        deadline = now + 2.0
        for run in self.init_runs + self.runs:
            if run.running:
                deadline = min(deadline, now + POLL_INTERVAL)
                for probe in run.probes.values():
                    deadline = min(deadline, probe.next_at)
            elif not run.done:
                deadline = min(deadline, max(run.next_start, now + 0.05))
        if not self.sandbox_ready:
            deadline = min(deadline, now + 0.5)
        return max(0.02, deadline - now)

    # -- the pod's life -------------------------------------------------------------------------
    def _step(self, pod: JSON) -> None:
        now = time.time()
        if not self.sandbox_ready:
            self._setup_sandbox(pod)
            if not self.sandbox_ready:
                return
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None and self.start_time and now - self.start_time > float(deadline):
            self.kill_all(grace=self.settings.max_grace_period, message="DeadlineExceeded")
            self._finish("Failed", "DeadlineExceeded",
                         "Pod was active on the node longer than the specified deadline")
            return
        if self.token_refresh_at and now >= self.token_refresh_at:
            self._refresh_tokens(pod)

        while self.init_index < len(self.init_runs):
            run = self.init_runs[self.init_index]
            self._reap(run, pod)
            if run.done:
                if run.view.terminated and run.view.terminated.exit_code == 0:
                    self.init_index += 1
                    continue
                self._finish("Failed", "", "")  # init container failed, restartPolicy Never
                return
            if not run.running and time.time() >= run.next_start:
                self._start(run, pod)
            return

        for run in self.runs:
            self._reap(run, pod)
        for run in self.runs:
            if not run.running and not run.done and time.time() >= run.next_start:
                self._start(run, pod)
            if run.running:
                self._probe(run, pod)
        phase = self._phase()
        if phase in TERMINAL_PHASES:
            self._finish(phase, "", "")

    def _finish(self, phase: str, reason: str, message: str) -> None:
        self.terminal_phase = phase
        self.reason, self.message = reason, message
        for run in self.init_runs + self.runs:
            run.view.ready = False
            if run.view.state != "terminated" and not run.running:
                run.done = True
        log.info("pod %s/%s %s %s", self.namespace, self.pod_name, phase, reason)

    def _phase(self) -> str:
        init = [container_status(r.view) for r in self.init_runs]
        main = [container_status(r.view) for r in self.runs]
        return compute_phase(self.restart_policy, init, main)

    # -- sandbox: directory, address, volumes ------------------------------------------------
    def _pod_with_status(self, pod: JSON) -> JSON:
        view = copy.deepcopy(pod)
        status = view.setdefault("status", {})
        status["hostIP"] = self.settings.host_ip
        status["hostIPs"] = [{"ip": self.settings.host_ip}]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return view

    def _setup_sandbox(self, pod: JSON) -> None:
        if self.start_time is None:
            self.start_time = time.time()
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "pod.json").write_text(json.dumps(pod, indent=1))
        if self.ip is None:
            spec = pod.get("spec") or {}
            if spec.get("hostNetwork"):
                self.ip = self.settings.host_ip
            else:
                try:
                    self.ip = self.host.allocate_ip(self.uid,
                                                     (pod.get("status") or {}).get("podIP"))
                except (OSError, RuntimeError) as exc:
                    self.sandbox_message = f"no pod address: {exc}"
                    for run in self.init_runs + self.runs:
                        run.view.waiting_message = self.sandbox_message
                    return
        try:
            self.volumes = materialize_volumes(
                self._pod_with_status(pod), self.dir, self.host.lookup, self._token_provider,
                workdir=self.settings.workdir, allocatable=self.settings.allocatable,
                fallback_ca=self.host.ca_bytes,
            )
        except (VolumeError, EnvError, ApiException) as exc:
            self.sandbox_message = str(exc)
            for run in self.init_runs + self.runs:
                run.view.waiting_reason = "ContainerCreating"
                run.view.waiting_message = f"MountVolume.SetUp failed: {exc}"
            return
        if self.volumes.refresh_after:
            self.token_refresh_at = time.time() + self.volumes.refresh_after
        self.sandbox_ready = True
        for run in self.init_runs + self.runs:
            run.view.waiting_message = ""
        if self.init_runs:
            for run in self.runs:
                run.view.waiting_reason = "PodInitializing"

    def _token_provider(self, audience: str | None, expiration: int) -> str:
        return self.host.request_token(self.pod, audience, expiration)

    def _refresh_tokens(self, pod: JSON) -> None:
        assert self.volumes is not None
        try:
            fresh = materialize_volumes(
                self._pod_with_status(pod), self.dir, self.host.lookup, self._token_provider,
                workdir=self.settings.workdir, allocatable=self.settings.allocatable,
                fallback_ca=self.host.ca_bytes, only=set(self.volumes.token_volumes),
            )
            self.token_refresh_at = time.time() + (fresh.refresh_after or 600)
        except (VolumeError, ApiException) as exc:
            log.warning("refreshing tokens of %s/%s failed: %s", self.namespace, self.pod_name, exc)
            self.token_refresh_at = time.time() + 30

    # -- deletion -----------------------------------------------------------------------------
    def _terminate(self, pod: JSON) -> None:
        grace = self._grace(pod)
        if any(r.proc is not None for r in self.init_runs + self.runs):
            self.host.event(pod, "Killing", "Stopping pod")
        self.kill_all(grace)
        if self.terminal_phase is None:
            statuses = [container_status(r.view) for r in self.runs]
            all_ok = bool(statuses) and all(
                ((s["state"].get("terminated") or {}).get("exitCode") == 0) for s in statuses
            )
            self._finish("Succeeded" if all_ok else "Failed", "", "")
        self._push_status()
        self.host.delete_pod_now(pod)
        log.info("pod %s/%s terminated and deleted", self.namespace, self.pod_name)

    # -- status -------------------------------------------------------------------------------
    def build_status(self, pod: JSON) -> JSON:
        """The full status this node reports for ``pod`` right now."""
        init_statuses = [container_status(r.view) for r in self.init_runs]
        statuses = [container_status(r.view) for r in self.runs]
        phase = self.terminal_phase or (
            compute_phase(self.restart_policy, init_statuses, statuses)
            if self.sandbox_ready else "Pending"
        )
        initialized = self.init_index >= len(self.init_runs) and self.sandbox_ready
        if self.terminal_phase is not None:
            initialized = initialized or self.init_index >= len(self.init_runs)
        inputs = ConditionInputs(
            sandbox_ready=self.sandbox_ready,
            initialized=initialized,
            uninitialized=[r.name for r in self.init_runs[self.init_index:]],
            unready=[r.name for r in self.runs if not r.view.ready],
            phase=phase,
            readiness_gates_false=readiness_gates_false(pod),
        )
        foreign = [c for c in (pod.get("status") or {}).get("conditions") or []
                   if c.get("type") not in OWN_CONDITIONS]
        now = rfc3339()
        own = merge_conditions(self._own_conditions, desired_conditions(inputs), now)
        self._own_conditions = own
        status: JSON = {
            "phase": phase,
            "conditions": own + foreign,
            "hostIP": self.settings.host_ip,
            "hostIPs": [{"ip": self.settings.host_ip}],
            "containerStatuses": statuses,
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.start_time:
            status["startTime"] = rfc3339(self.start_time)
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        return status

    def _push_status(self) -> None:
        for attempt in range(6):
            pod = self.pod
            status = self.build_status(pod)
            wanted = comparable(status)
            if wanted == self._last_pushed:
                return
            body = {"metadata": {"resourceVersion": pod["metadata"].get("resourceVersion")},
                    "status": status}
            try:
                updated = self.host.patch_pod_status(self.namespace, self.pod_name, body)
            except ApiException as exc:
                if exc.status == 404:
                    self.gone = True
                    return
                if exc.status == 409 and attempt < 5:
                    fresh = self.host.read_pod(self.namespace, self.pod_name)
                    if fresh is None or fresh["metadata"].get("uid") != self.uid:
                        self.gone = True
                        return
                    self.update(fresh)
                    continue
                if not self.host.stopping.is_set():
                    log.warning("status update of %s/%s failed: %s", self.namespace,
                                self.pod_name, exc)
                return
            self._last_pushed = wanted
            if updated.get("metadata", {}).get("uid") == self.uid:
                self.update(updated)
            return
