"""The "container runtime": commands from images, local processes, probes and log files.

A container is a local process in its own session/process group (so the whole tree can be
signalled), with stdout and stderr appended to one log file, that dies with the thread that
started it (``PR_SET_PDEATHSIG``) so a crashed node never leaves processes behind; its whole
group dies with the node's process (:data:`mlops_localstack.procs.REAPER`), its own children
included.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..procs import REAPER

JSON = dict[str, Any]


class ContainerConfigError(Exception):
    """The container cannot be started; ``reason`` is the kubelet-style reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageEntrypoint:
    """What an image would run: Docker's ENTRYPOINT and CMD."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


#: Known images (glob on the repository, without registry-independent tag/digest, or its last
#: path segment). The project's runtime image runs the ``mlops-runtime`` console script.
DEFAULT_IMAGE_ENTRYPOINTS: dict[str, ImageEntrypoint] = {
    "mlops-runtime": ImageEntrypoint(("mlops-runtime",), ()),
    "*/mlops-runtime": ImageEntrypoint(("mlops-runtime",), ()),
    "mlops-operator": ImageEntrypoint(("mlops-operator",), ("run",)),
    "*/mlops-operator": ImageEntrypoint(("mlops-operator",), ("run",)),
    "python": ImageEntrypoint((), ("python3",)),
    "*/python": ImageEntrypoint((), ("python3",)),
}


def image_repository(image: str) -> str:
    """``ghcr.io/org/app:1.2@sha256:..`` → ``ghcr.io/org/app``."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    return ref


def entrypoints_from_env() -> dict[str, ImageEntrypoint]:
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


def lookup_image(image: str, table: Mapping[str, ImageEntrypoint]) -> ImageEntrypoint | None:
    repo = image_repository(image)
    base = repo.rsplit("/", 1)[-1]
    for pattern, entry in table.items():
        if fnmatch.fnmatchcase(repo, pattern) or fnmatch.fnmatchcase(base, pattern):
            return entry
    return None


def container_argv(container: JSON, table: Mapping[str, ImageEntrypoint]) -> list[str]:
    """``command``/``args`` combined with the image's ENTRYPOINT/CMD, Docker style.

    ``command`` replaces the ENTRYPOINT (and drops the CMD); ``args`` replaces the CMD. When the
    image's entrypoint is needed but unknown, raise ``ImageEntrypointUnknown``.
    """
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if command:
        return command + args
    image = str(container.get("image") or "")
    entry = lookup_image(image, table)
    if entry is None:
        raise ContainerConfigError(
            "ImageEntrypointUnknown",
            f"image {image!r} has no known entrypoint on the local node: set the container's "
            "command, or map the image with MLOPS_LOCAL_IMAGE_ENTRYPOINTS",
        )
    argv = list(entry.entrypoint) + (args or list(entry.cmd))
    if not argv:
        raise ContainerConfigError("ImageEntrypointUnknown", f"image {image!r} has no command")
    return argv


def resolve_executable(argv0: str, path: str, cwd: str | Path) -> str:
    """Find argv[0]: on PATH (project venv first); absolute paths that only exist inside an
    image (``/usr/local/bin/python``, ``/opt/venv/bin/x``) fall back to their basename."""
    if "/" in argv0:
        candidate = Path(argv0) if os.path.isabs(argv0) else Path(cwd) / argv0
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        found = shutil.which(os.path.basename(argv0), path=path)
    else:
        found = shutil.which(argv0, path=path)
    if not found:
        raise ContainerConfigError(
            "StartError",
            f'exec: "{argv0}": executable file not found in $PATH',
        )
    return found


# -- processes ---------------------------------------------------------------------------------
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the node


def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | Path, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a process in its own session, output appended to ``log_path``.

    Returns the process and the log offset where its output starts.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        offset = log_file.tell()
        proc = subprocess.Popen(  # noqa: S603 - running the pod's command is the point
            list(argv),
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_child_setup,  # noqa: PLW1509
        )
    REAPER.watch(proc.pid)
    return proc, offset


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group of ``proc`` (its own session), ignoring vanished groups."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def kill_gracefully(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL; return the exit status."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, grace))
    # whatever is left of the group (children that ignored SIGTERM) goes too
    signal_group(proc, signal.SIGKILL)
    REAPER.forget(proc.pid)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        return -9


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """Popen's returncode → (container exit code, signal): killed by N → 128+N like runc."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def tail_log(path: Path, offset: int = 0, lines: int = 20, max_bytes: int = 4096) -> str:
    """The last ``lines`` lines written since ``offset`` (at most ``max_bytes``)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(offset, size - 64 * 1024)
            fh.seek(start)
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    text = "\n".join(data.splitlines()[-lines:]) if lines else data
    return text[-max_bytes:]


# -- probes ------------------------------------------------------------------------------------
def named_ports(container: JSON) -> dict[str, int]:
    return {
        p["name"]: int(p["containerPort"])
        for p in container.get("ports") or []
        if p.get("name") and p.get("containerPort")
    }


def probe_port(port: Any, ports: Mapping[str, int]) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    if port in ports:
        return ports[port]
    raise ValueError(f"probe port {port!r} is not a container port name")


def run_probe(
    probe: JSON,
    *,
    pod_ip: str,
    ports: Mapping[str, int],
    env: Mapping[str, str],
    cwd: str | Path,
) -> tuple[bool, str]:
    """Run one probe attempt; returns (success, message)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            host = spec.get("host") or pod_ip
            port = probe_port(spec.get("port"), ports)
            scheme = str(spec.get("scheme") or "HTTP").lower()
            path = spec.get("path") or "/"
            if not path.startswith("/"):
                path = "/" + path
            headers = {h["name"]: h.get("value", "") for h in spec.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/local")
            with httpx.Client(timeout=timeout, verify=False, trust_env=False) as client:
                resp = client.get(f"{scheme}://{host}:{port}{path}", headers=headers)
            if 200 <= resp.status_code < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {resp.status_code}"
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            host = spec.get("host") or pod_ip
            port = probe_port(spec.get("port"), ports)
            with socket.create_connection((host, port), timeout=timeout):
                return True, ""
        if "exec" in probe:
            command = [str(c) for c in (probe["exec"] or {}).get("command") or []]
            if not command:
                return False, "exec probe without a command"
            argv0 = resolve_executable(command[0], env.get("PATH", ""), cwd)
            done = subprocess.run(  # noqa: S603
                [argv0, *command[1:]], env=dict(env), cwd=str(cwd), capture_output=True,
                timeout=timeout, start_new_session=True, check=False,
            )
            if done.returncode == 0:
                return True, ""
            out = (done.stdout + done.stderr).decode("utf-8", "replace").strip()[-500:]
            return False, f"exec probe exited {done.returncode}: {out}"
        if "grpc" in probe:
            from . import grpcprobe  # grpcio loads on the first gRPC probe only

            spec = probe["grpc"] or {}
            port = probe_port(spec.get("port"), ports)
            return grpcprobe.check(pod_ip, port, str(spec.get("service") or ""), timeout)
    except (httpx.HTTPError, OSError, ValueError, subprocess.TimeoutExpired,
            ContainerConfigError) as exc:
        return False, f"probe failed: {exc}"
    return True, "probe without a handler"


@dataclass
class ProbeState:
    """Thresholds and timing of one probe of one running container."""

    kind: str  # readiness | liveness | startup
    probe: JSON
    container_started: float
    result: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    last_message: str = ""
    history: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.result = self.kind == "liveness"  # liveness is "healthy" until proven otherwise
        self.next_at = self.container_started + float(self.probe.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float, message: str = "") -> bool:
        """Count one attempt; returns True when ``result`` flipped."""
        self.next_at = now + self.period
        self.last_message = message
        before = self.result
        if ok:
            self.successes += 1
            self.failures = 0
            threshold = int(self.probe.get("successThreshold") or 1)
            if self.kind != "readiness":
                threshold = 1
            if self.successes >= threshold:
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.probe.get("failureThreshold") or 3):
                self.result = False
        return before != self.result


def now() -> float:
    return time.time()


def newest_pod_dir(pods_dir: Path, namespace: str, pod: str) -> Path | None:
    """The newest directory of pod ``namespace/pod`` under ``pods_dir`` (one per pod UID)."""
    dirs = sorted(pods_dir.glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
    return dirs[-1] if dirs else None


def container_log(pod_dir: Path, container: str | None = None, tail: int | None = None) -> str:
    """A container's log in ``pod_dir`` (the first container's by default), optionally tailed."""
    if container is None:
        try:
            spec = json.loads((pod_dir / "pod.json").read_text())["spec"]
            container = spec["containers"][0]["name"]
        except (OSError, KeyError, IndexError, ValueError):
            logs = sorted(pod_dir.glob("*.log"))
            if not logs:
                return ""
            container = logs[0].stem
    path = pod_dir / f"{container}.log"
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    if tail is not None:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail:]) if tail > 0 else ""
    return text
