"""The local stack behind ``mlops-operator local up|down|status``.

One supervisor process owns every component (control plane, node stand-in, MLflow,
Prometheus, the operator) as children that die with it; ``up`` starts the supervisor detached and waits until
``state.json`` says ready; ``down`` signals it and waits until everything is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .alertmanager import AlertmanagerServer, render_rules
from .binaries import ensure_binaries
from .cluster import Cluster
from .controlplane import ControlPlane
from .mlflow_server import MlflowServer
from .procs import Component, LocalStackError, ManagedProcess, free_port, tail
from .prometheus import PrometheusServer


def default_state_dir() -> Path:
    env = os.environ.get("MLOPS_LOCAL_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "mlops-operator" / "local"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LocalStack(Component):
    """Everything the demo and the e2e tests need, on loopback."""

    state_dir: Path
    with_node: bool = True
    with_mlflow: bool = True
    with_operator: bool = True
    with_prometheus: bool = True
    #: Alertmanager routing the project's rules' alerts to the operator's webhook
    with_alertmanager: bool = True
    #: shorter ``for:`` of alert rules than the shipped ones (5 min of drift): on a dev stack
    #: the demo loop closes in minutes
    rule_for: dict[str, str] = field(default_factory=lambda: {"ModelFeatureDrift": "20s"})
    #: pod addresses of its node: apart from the test fixtures' nodes (127.10/16, 127.11/16, ...)
    pod_range: str = "127.30.0.0/16"
    #: how long MLflow and Prometheus may take to answer after a (re)start
    server_startup_timeout: float = 120.0
    control_plane: ControlPlane | None = field(default=None, init=False)
    mlflow: MlflowServer | None = field(default=None, init=False)
    prometheus: PrometheusServer | None = field(default=None, init=False)
    alertmanager: AlertmanagerServer | None = field(default=None, init=False)
    node: Any = field(default=None, init=False)
    operator: ManagedProcess | None = field(default=None, init=False)
    state: dict[str, Any] = field(default_factory=dict, init=False)

    def _write_state(self) -> None:
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_dir / "state.json")

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        binaries = ensure_binaries()
        self.state = {"pid": os.getpid(), "ready": False, "components": {}}
        self._write_state()
        self.control_plane = ControlPlane(self.state_dir / "controlplane", binaries=binaries)
        self.control_plane.start()
        kubectl = str(binaries.kubectl) if binaries.kubectl else (shutil.which("kubectl") or "")
        cluster = Cluster(self.control_plane.kubeconfig, kubectl_path=kubectl, kind="local")
        self.state.update(
            kubeconfig=str(self.control_plane.kubeconfig),
            server=self.control_plane.server,
            serverVersion=binaries.server_version(),
            kubectl=kubectl,
        )
        self.state["components"]["control-plane"] = self.control_plane.server
        from mlops_operator.crdgen import write_crds  # the CRDs of this very code, not a stale copy

        cluster.apply_crds(sorted(write_crds(self.state_dir / "crds")))
        if self.with_mlflow:
            self.mlflow = MlflowServer(self.state_dir / "mlflow",
                                       startup_timeout=self.server_startup_timeout).start()
            self.state["mlflowTrackingUri"] = self.mlflow.tracking_uri
            self.state["components"]["mlflow"] = self.mlflow.tracking_uri
        if self.with_node:
            from .node import NodeStandIn

            self.node = NodeStandIn(self.control_plane.kubeconfig, workdir=self.state_dir / "node",
                                    ip_range=self.pod_range)
            self.node.start()
            self.state["components"]["node"] = str(self.state_dir / "node")
        receiver_port, metrics_port = free_port(), free_port()
        token = secrets.token_urlsafe(24)
        if self.with_alertmanager and self.with_prometheus and self.with_operator:
            self.alertmanager = AlertmanagerServer(
                self.state_dir / "alertmanager",
                receiver_url=f"http://127.0.0.1:{receiver_port}/api/v1/alerts", token=token,
            ).start()
            self.state["alertmanagerUrl"] = self.alertmanager.url
            self.state["components"]["alertmanager"] = self.alertmanager.url
        if self.with_prometheus:
            rules = render_rules(self.state_dir / "rules", for_overrides=self.rule_for) if (
                self.alertmanager) else ()
            self.prometheus = PrometheusServer(
                self.state_dir / "prometheus", kubeconfig=self.control_plane.kubeconfig,
                startup_timeout=self.server_startup_timeout,
                rule_files=tuple(rules),
                alertmanager_url=self.alertmanager.url if self.alertmanager else None,
                static_targets={"mlops-operator": [f"127.0.0.1:{metrics_port}"]}
                if self.with_operator else {},
            ).start()
            self.state["prometheusUrl"] = self.prometheus.url
            self.state["components"]["prometheus"] = self.prometheus.url
        if self.with_operator:
            env = cluster.env
            env.update(
                MLOPS_METRICS_PORT=str(metrics_port),
                MLOPS_METRICS_HOST="127.0.0.1",
                MLOPS_ALERT_RECEIVER_PORT=str(receiver_port),
                MLOPS_ALERT_RECEIVER_HOST="127.0.0.1",
                MLOPS_ALERT_RECEIVER_TOKEN=token,
            )
            if self.mlflow:
                env["MLOPS_MLFLOW_TRACKING_URI"] = self.mlflow.tracking_uri
            if self.prometheus:
                env["MLOPS_PROMETHEUS_URL"] = self.prometheus.url
            self.operator = start_operator(env, self.state_dir / "operator.log")
            self.state["components"]["operator"] = f"metrics http://127.0.0.1:{metrics_port}/metrics"
        self.state["ready"] = True
        self._write_state()

    def check(self) -> None:
        """Raise when a component has died."""
        for component in (self.control_plane, self.mlflow, self.prometheus, self.alertmanager):
            if component:
                component.check()
        if self.operator:
            self.operator.check_running()

    def stop(self) -> None:
        if self.operator:
            self.operator.stop()
        if self.node:
            with contextlib.suppress(Exception):
                self.node.stop()
        if self.prometheus:
            self.prometheus.stop()
        if self.alertmanager:
            self.alertmanager.stop()
        if self.mlflow:
            self.mlflow.stop()
        if self.control_plane:
            self.control_plane.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "state.json").unlink()

    def run_forever(self) -> None:
        """Supervise until SIGTERM/SIGINT; stop everything on the way out."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop.set())
        try:
            self.start()
            while not stop.wait(2.0):
                self.check()
        finally:
            self.stop()


def start_operator(
    env: dict[str, str],
    log_path: Path,
    namespaces: Sequence[str] = (),
    *,
    verbose: bool = False,
    liveness_port: int | None = None,
    timeout: float = 120,
) -> ManagedProcess:
    """``mlops-operator run`` as a child process; returns once kopf's ``/healthz`` answers.

    kopf answers its liveness endpoint only after the startup handlers ran and the watches
    started, so "live" here means "reconciling". ``namespaces`` (globs allowed) limit the scope;
    none means cluster-wide.
    """
    liveness = f"http://127.0.0.1:{liveness_port or free_port()}/healthz"
    argv = [sys.executable, "-m", "mlops_operator.cli", "run", "--liveness", liveness]
    argv += [f"--namespace={ns}" for ns in namespaces] or ["--all-namespaces"]
    if verbose:
        argv.append("--verbose")
    proc = ManagedProcess("operator", argv, log_path, env=env).start()
    try:
        proc.wait_until(
            lambda: httpx.get(liveness, timeout=2).status_code == 200,
            timeout=timeout,
            what="live (kopf /healthz)",
        )
    except BaseException:
        proc.stop()  # not live in time: never leave it running unseen next to a new one
        raise
    return proc


def up_detached(state_dir: Path, extra_args: list[str], timeout: float = 600) -> dict[str, Any]:
    """Start the supervisor in the background and wait until it reports ready."""
    state = read_state(state_dir)
    if state and alive(int(state.get("pid", 0))):
        raise LocalStackError(
            f"a local stack is already running (pid {state['pid']}, {state_dir}); "
            "`mlops-operator local down` first"
        )
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    log_path = state_dir / "supervisor.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.cli", "local", "up", "--foreground",
             "--state-dir", str(state_dir), *extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalStackError(
                f"the local stack failed to start (exit {proc.returncode}); last lines of "
                f"{log_path}:\n{tail(log_path, 30)}"
            )
        state = read_state(state_dir)
        if state and state.get("ready"):
            return state
        time.sleep(0.5)
    raise LocalStackError(f"the local stack was not ready after {timeout:.0f}s; see {log_path}")


def down(state_dir: Path, timeout: float = 60) -> bool:
    """Stop a running stack; True when one was running."""
    state = read_state(state_dir)
    if not state:
        return False
    pid = int(state.get("pid", 0))
    if not pid or not alive(pid):
        (state_dir / "state.json").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True
