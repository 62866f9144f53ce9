"""One thread per pod: sandbox, containers, probes, restarts, status and deletion."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import ApiException
from .envs import EnvError, expand_argv, resolve_env
from .host import PodHost
from .runtime import (
    ContainerConfigError,
    ProbeState,
    container_argv,
    exit_code_of,
    kill_gracefully,
    named_ports,
    resolve_executable,
    run_probe,
    signal_group,
    spawn,
    tail_log,
)
from .status import (
    OWN_CONDITIONS,
    TERMINAL_PHASES,
    ConditionInputs,
    ContainerView,
    Terminated,
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
    container_mounts,
    materialize_volumes,
    mount_env,
    service_account_dir,
    write_pod_kubeconfig,
)

log = logging.getLogger(__name__)
JSON = dict[str, Any]

#: How often a pod worker looks at its processes while any is running (seconds).
POLL_INTERVAL = 0.25
#: Variables passed through from the node's own environment to every container.
PASSTHROUGH_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
                   "REQUESTS_CA_BUNDLE", "USER", "LOGNAME")


@dataclass
class ContainerRun:
    """A container of the pod: its spec, what we report, and its current process."""

    spec: JSON
    init: bool
    view: ContainerView
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    started_wall: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    probes: dict[str, ProbeState] = field(default_factory=dict)
    next_start: float = 0.0
    crashes: int = 0
    done: bool = False
    kill_message: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None


def _rv(obj: JSON) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class PodWorker(threading.Thread):
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

    # -- containers ---------------------------------------------------------------------------
    def _container_env(self, pod: JSON, spec: JSON) -> tuple[dict[str, str], dict[str, str]]:
        node = self.settings
        base: dict[str, str] = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        host, port = self.host.endpoint.host_port
        base.update({
            "PATH": node.default_path,
            "HOSTNAME": (pod.get("spec") or {}).get("hostname") or self.pod_name,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            "PYTHONUNBUFFERED": "1",
            "VIRTUAL_ENV": str(node.python_prefix),
        })
        result = resolve_env(self._pod_with_status(pod), spec, self.host.lookup, base=base,
                             allocatable=node.allocatable)
        env = result.env
        path = env.get("PATH", "")
        venv_bin = str(node.python_prefix / "bin")
        if venv_bin not in path.split(os.pathsep):
            env["PATH"] = venv_bin + (os.pathsep + path if path else "")
        mounts = container_mounts(spec, self.volumes or Volumes())
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        term_local = self.dir / f"{spec['name']}.termination-log"
        mounts[term_path] = str(term_local)
        extra = mount_env(mounts, spec)
        extra.update({
            "MLOPS_LOCAL_NODE": node.name,
            "MLOPS_LOCAL_POD_IP": self.ip or "",
            "MLOPS_LOCAL_POD_DIR": str(self.dir),
            "MLOPS_LOCAL_TERMINATION_LOG": str(term_local),
        })
        sa_dir = service_account_dir(mounts)
        if sa_dir and "KUBECONFIG" not in env:
            ca = Path(sa_dir) / "ca.crt"
            kubeconfig = write_pod_kubeconfig(
                self.dir / "kube" / f"{spec['name']}.kubeconfig",
                server=self.host.endpoint.server,
                token_file=Path(sa_dir) / "token",
                ca_file=ca if ca.exists() else self.host.endpoint.ca_file,
                namespace=self.namespace,
                insecure=not self.host.endpoint.verify,
            )
            extra["KUBECONFIG"] = str(kubeconfig)
        for key, value in extra.items():
            env.setdefault(key, value)
        return env, mounts

    def _workdir_for(self, spec: JSON, mounts: dict[str, str]) -> Path:
        wanted = spec.get("workingDir")
        if wanted:
            for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                if wanted == mount_path or wanted.startswith(mount_path.rstrip("/") + "/"):
                    return Path(local) / os.path.relpath(wanted, mount_path)
            if os.path.isdir(wanted):
                return Path(wanted)
        cwd = self.dir / "work" / spec["name"]
        cwd.mkdir(parents=True, exist_ok=True)
        return cwd

    def _start(self, run: ContainerRun, pod: JSON) -> None:
        node = self.settings
        view = run.view
        log_path = self.dir / f"{run.name}.log"
        try:
            env, mounts = self._container_env(pod, run.spec)
        except EnvError as exc:
            view.state = "waiting"
            view.waiting_reason = "CreateContainerConfigError"
            view.waiting_message = str(exc)
            run.next_start = time.time() + 1.0
            return
        except ApiException as exc:
            view.state = "waiting"
            view.waiting_reason = "CreateContainerConfigError"
            view.waiting_message = f"looking up env sources failed: {exc}"
            run.next_start = time.time() + 1.0
            return
        cwd = self._workdir_for(run.spec, mounts)
        if self.host.stopping.is_set():
            return
        try:
            argv = expand_argv(container_argv(run.spec, node.image_entrypoints), env)
            argv[0] = resolve_executable(argv[0], env.get("PATH", ""), cwd)
            term_log = Path(env["MLOPS_LOCAL_TERMINATION_LOG"])
            term_log.unlink(missing_ok=True)
            proc, offset = spawn(argv, env, cwd, log_path)
        except (ContainerConfigError, OSError) as exc:
            reason = getattr(exc, "reason", "StartError")
            message = getattr(exc, "message", str(exc))
            with open(log_path, "a") as fh:
                fh.write(f"[local node] cannot start container {run.name}: {message}\n")
            self.host.event(pod, "Failed", f"Error: {reason}: {message}", warning=True)
            if view.started_at is not None or view.last_terminated or view.terminated:
                view.restart_count += 1
            self._record_exit(run, Terminated(exit_code=128, reason=reason, message=message,
                                              finished_at=time.time()))
            return
        if view.started_at is not None or view.terminated is not None:
            view.restart_count += 1
        run.proc, run.log_offset, run.env = proc, offset, env
        run.started_wall = time.time()
        run.kill_message = ""
        if view.terminated is not None:
            view.last_terminated = view.terminated
        view.state, view.terminated = "running", None
        view.started_at = run.started_wall
        view.container_id = f"local://{proc.pid}"
        view.waiting_message = ""
        spec = run.spec
        view.started = "startupProbe" not in spec
        view.ready = False
        run.probes = {}
        if not run.init:
            for kind in ("startup", "liveness", "readiness"):
                probe = spec.get(f"{kind}Probe")
                if probe:
                    run.probes[kind] = ProbeState(kind, probe, run.started_wall)
            view.ready = view.started and "readiness" not in run.probes
        (self.dir / f"{run.name}.argv").write_text(json.dumps({"argv": argv, "cwd": str(cwd),
                                                               "pid": proc.pid}))
        log.info("pod %s/%s container %s started pid %d: %s", self.namespace, self.pod_name,
                 run.name, proc.pid, argv)
        self.host.event(pod, "Started", f"Started container {run.name}")

    def _reap(self, run: ContainerRun, pod: JSON) -> None:
        if run.proc is None:
            return
        code = run.proc.poll()
        if code is None:
            return
        # take the rest of the group down too (daemonised children of a finished container)
        signal_group(run.proc, signal.SIGKILL)
        run.proc = None
        self._record_exit(run, self._termination(run, code))

    def _termination(self, run: ContainerRun, returncode: int) -> Terminated:
        exit_code, sig = exit_code_of(returncode)
        reason = "Completed" if exit_code == 0 else "Error"
        message = ""
        term_log = Path(run.env.get("MLOPS_LOCAL_TERMINATION_LOG", "/nonexistent"))
        with contextlib.suppress(OSError):
            message = term_log.read_text(errors="replace")[-4096:]
        if not message and exit_code != 0:
            message = tail_log(self.dir / f"{run.name}.log", run.log_offset, lines=20)
        if run.kill_message:
            message = (run.kill_message + ("\n" + message if message else ""))[-4096:]
        return Terminated(
            exit_code=exit_code, reason=reason, message=message, started_at=run.started_wall,
            finished_at=time.time(), container_id=run.view.container_id, signal=sig,
        )

    def _record_exit(self, run: ContainerRun, term: Terminated) -> None:
        view = run.view
        view.ready = False
        view.started = False
        run.probes = {}
        policy = self.restart_policy
        restart = policy == "Always" or (policy == "OnFailure" and term.exit_code != 0)
        if run.init:
            restart = term.exit_code != 0 and policy != "Never"
        if self.terminal_phase is not None or self.host.stopping.is_set():
            restart = False
        ran_for = term.finished_at - run.started_wall if term.finished_at and run.started_wall else 0
        if ran_for > 2 * self.settings.restart_backoff_max:
            run.crashes = 0
        run.crashes += 1
        log.info("pod %s/%s container %s exited %d (%s)%s", self.namespace, self.pod_name,
                 run.name, term.exit_code, term.reason, ", restarting" if restart else "")
        if not restart:
            view.state, view.terminated = "terminated", term
            run.done = True
            return
        delay = 0.0 if run.crashes <= 1 else min(
            self.settings.restart_backoff * 2 ** (run.crashes - 2), self.settings.restart_backoff_max
        )
        run.next_start = time.time() + delay
        view.state = "waiting"
        view.last_terminated, view.terminated = term, None
        view.waiting_reason = "CrashLoopBackOff"
        view.waiting_message = (
            f"back-off {delay:g}s restarting failed container={run.name} "
            f"pod={self.pod_name}_{self.namespace}({self.uid})"
        )
        if delay:
            self.host.event(self.pod, "BackOff", f"Back-off restarting failed container "
                            f"{run.name} in pod {self.pod_name}", warning=True)

    def _probe(self, run: ContainerRun, pod: JSON) -> None:
        now = time.time()
        view = run.view
        ports = named_ports(run.spec)
        cwd = self.dir / "work" / run.name
        startup = run.probes.get("startup")
        if startup is not None and not startup.result:
            if startup.due(now):
                ok, msg = run_probe(startup.probe, pod_ip=self.ip or "", ports=ports,
                                    env=run.env, cwd=cwd)
                startup.record(ok, time.time(), msg)
                if startup.result:
                    view.started = True
                    view.ready = "readiness" not in run.probes
                    for p in run.probes.values():  # the others start now
                        if p.kind != "startup":
                            p.next_at = time.time() + float(p.probe.get("initialDelaySeconds") or 0)
                elif startup.failures >= int(startup.probe.get("failureThreshold") or 3):
                    self._kill_for_probe(run, pod, "Startup", msg)
            return
        liveness = run.probes.get("liveness")
        if liveness is not None and liveness.due(now):
            ok, msg = run_probe(liveness.probe, pod_ip=self.ip or "", ports=ports, env=run.env,
                                cwd=cwd)
            liveness.record(ok, time.time(), msg)
            if not liveness.result:
                self._kill_for_probe(run, pod, "Liveness", msg)
                return
        readiness = run.probes.get("readiness")
        if readiness is not None and readiness.due(now):
            ok, msg = run_probe(readiness.probe, pod_ip=self.ip or "", ports=ports, env=run.env,
                                cwd=cwd)
            if readiness.record(ok, time.time(), msg) and not readiness.result:
                self.host.event(pod, "Unhealthy", f"Readiness probe failed: {msg}", warning=True)
            view.ready = readiness.result

    def _kill_for_probe(self, run: ContainerRun, pod: JSON, kind: str, msg: str) -> None:
        assert run.proc is not None
        self.host.event(pod, "Unhealthy", f"{kind} probe failed: {msg}", warning=True)
        self.host.event(pod, "Killing", f"Container {run.name} failed {kind.lower()} probe, "
                        "will be restarted")
        run.kill_message = f"{kind} probe failed: {msg}"
        grace = self._grace(pod)
        code = kill_gracefully(run.proc, grace)
        run.proc = None
        self._record_exit(run, self._termination(run, code))

    # -- deletion -----------------------------------------------------------------------------
    def _grace(self, pod: JSON) -> float:
        meta = pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return float(min(float(grace or 0), self.settings.max_grace_period))

    def kill_all(self, grace: float, message: str = "") -> None:
        """SIGTERM every container's process group, wait up to ``grace``, SIGKILL the rest."""
        with self._proc_lock:
            self._kill_all(grace, message)

    def _kill_all(self, grace: float, message: str) -> None:
        runs = [r for r in self.init_runs + self.runs if r.proc is not None]
        for run in runs:
            assert run.proc is not None
            if message:
                run.kill_message = message
            signal_group(run.proc, signal.SIGTERM)
        deadline = time.time() + grace
        for run in runs:
            assert run.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=max(0.0, deadline - time.time()))
        for run in runs:
            proc = run.proc
            if proc is None:
                continue
            code = kill_gracefully(proc, 0.0)
            run.proc = None
            term = self._termination(run, code)
            run.view.state, run.view.terminated = "terminated", term
            run.view.ready = run.view.started = False
            run.done = True

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
