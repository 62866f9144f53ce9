"""A pod's container processes: environment, start, exit and restart backoff, probes, kill.

:class:`ContainerProcesses` is the container half of :class:`~.worker.PodWorker` (which mixes
it in); the attributes it relies on are declared below and set by the worker.
"""

from __future__ import annotations

import contextlib
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
from .host import NodeSettings, PodHost
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
from .status import ContainerView, Terminated
from .volumes import (
    Volumes,
    container_mounts,
    mount_env,
    service_account_dir,
    write_pod_kubeconfig,
)

log = logging.getLogger("mlops_localstack.node.worker")
JSON = dict[str, Any]

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

class ContainerProcesses:
    """Start, watch, probe, restart and kill the containers of one pod."""

    host: PodHost
    settings: NodeSettings
    namespace: str
    pod_name: str
    uid: str
    dir: Path
    ip: str | None
    volumes: Volumes | None
    restart_policy: str
    terminal_phase: str | None
    init_runs: list[ContainerRun]
    runs: list[ContainerRun]
    _proc_lock: threading.RLock

    @property
    def pod(self) -> JSON:
        raise NotImplementedError

    def _pod_with_status(self, pod: JSON) -> JSON:
        raise NotImplementedError

    def _container_env(self, pod: JSON, spec: JSON) -> tuple[dict[str, str], dict[str, str]]:
        settings = self.settings
        base: dict[str, str] = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        host, port = self.host.endpoint.host_port
        base.update({
            "PATH": settings.default_path,
            "HOSTNAME": (pod.get("spec") or {}).get("hostname") or self.pod_name,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            "PYTHONUNBUFFERED": "1",
            "VIRTUAL_ENV": str(settings.python_prefix),
        })
        result = resolve_env(self._pod_with_status(pod), spec, self.host.lookup, base=base,
                             allocatable=settings.allocatable)
        env = result.env
        path = env.get("PATH", "")
        venv_bin = str(settings.python_prefix / "bin")
        if venv_bin not in path.split(os.pathsep):
            env["PATH"] = venv_bin + (os.pathsep + path if path else "")
        mounts = container_mounts(spec, self.volumes or Volumes())
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        term_local = self.dir / f"{spec['name']}.termination-log"
        mounts[term_path] = str(term_local)
        extra = mount_env(mounts, spec)
        extra.update({
            "MLOPS_LOCAL_NODE": settings.name,
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
        settings = self.settings
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
            argv = expand_argv(container_argv(run.spec, settings.image_entrypoints), env)
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
        view = run.view
        ports = named_ports(run.spec)
        cwd = self.dir / "work" / run.name

        def due(kind: str) -> ProbeState | None:
            state = run.probes.get(kind)
            return state if state is not None and state.due(time.time()) else None

        def check(state: ProbeState) -> tuple[bool, str]:
            """Run the probe; (whether its result changed, the message)."""
            ok, msg = run_probe(state.probe, pod_ip=self.ip or "", ports=ports, env=run.env,
                                cwd=cwd)
            return state.record(ok, time.time(), msg), msg

        startup = run.probes.get("startup")
        if startup is not None and not startup.result:
            if due("startup"):
                _, msg = check(startup)
                if startup.result:
                    view.started = True
                    view.ready = "readiness" not in run.probes
                    for p in run.probes.values():  # the others start now
                        if p.kind != "startup":
                            p.next_at = time.time() + float(p.probe.get("initialDelaySeconds") or 0)
                elif startup.failures >= int(startup.probe.get("failureThreshold") or 3):
                    self._kill_for_probe(run, pod, "Startup", msg)
            return
        if liveness := due("liveness"):
            _, msg = check(liveness)
            if not liveness.result:
                self._kill_for_probe(run, pod, "Liveness", msg)
                return
        if readiness := due("readiness"):
            changed, msg = check(readiness)
            if changed and not readiness.result:
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
