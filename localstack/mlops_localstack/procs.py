"""Managed child processes of the local stack.

Every component (etcd, kube-apiserver, MLflow, Prometheus, ...) runs as a child process in its
own process group, with its output in a log file. Its whole group dies with this process, however
this process dies (a crashed test run, a killed supervisor): the :class:`GroupReaper` does that,
for the component's own children too (MLflow's uvicorn and job runners), and whatever thread
started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

# The stack forks its children from a process that may also speak gRPC (the node's gRPC
# probes): with gRPC's fork handlers on, a fork while its threads are busy crashed the child
# before exec ("skipping fork() handlers", then SIGSEGV). The children exec at once and never
# use the parent's gRPC state, so the handlers are not needed. Read when gRPC is first used.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


class LocalStackError(RuntimeError):
    """Something in the local stack could not be provided or started; the message says what."""


class ComponentExited(LocalStackError):
    """A component exited while we were waiting for it to become healthy."""


class Component:
    """A part of the stack started by ``start()`` and stopped by ``stop()``.

    Subclasses implement ``_start()`` and ``stop()``; ``start()`` calls ``stop()`` when
    ``_start()`` fails half-way, so a failed start never leaves processes behind.
    """

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The reaper: reads "+pgid starttime" / "-pgid" lines on stdin; at EOF, which comes when every
# copy of the pipe's write end is closed (this process gone, however it died), it SIGKILLs each
# group still listed. A group whose leader's pid now belongs to another process (pid_max may be
# 32768: pids come round) is left alone.
_REAPER = r"""
import os, signal, sys
for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
groups = {}
for line in sys.stdin:
    op, _, rest = line.strip().partition(" ")
    if op.startswith("+"):
        groups[int(op[1:])] = rest
    elif op.startswith("-"):
        groups.pop(int(op[1:]), None)
for pgid, started in groups.items():
    try:
        with open(f"/proc/{pgid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[19] != started:
                continue
    except (OSError, IndexError):
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


def _start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot; "" when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class GroupReaper:
    """Kills the process groups of this process's components when this process dies.

    ``PR_SET_PDEATHSIG`` is not enough: it reaches only the direct child (a component's own
    children are orphaned and run on: MLflow's servers held ~0.5-1 GB each), and it fires when
    the *thread* that started the child ends, not the process. One small watchdog process per
    process holds the read end of a pipe instead; its write end closes only when this process is
    gone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._owner = 0

    def _reaper(self) -> subprocess.Popen[str]:
        if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
            # first use, a forked copy of this object, or the reaper was killed: a new one
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _REAPER], stdin=subprocess.PIPE, text=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            self._owner = os.getpid()
        return self._proc

    def _send(self, line: str) -> None:
        with self._lock:
            stdin = self._reaper().stdin
            assert stdin is not None  # stdin=PIPE
            with contextlib.suppress(OSError):  # the reaper was killed: best effort
                stdin.write(line + "\n")
                stdin.flush()

    def watch(self, pgid: int) -> None:
        """Kill group ``pgid`` if this process dies before :meth:`forget`."""
        self._send(f"+{pgid} {_start_time(pgid)}")

    def forget(self, pgid: int) -> None:
        """The group was stopped: nothing to kill any more (its pid may be reused)."""
        self._send(f"-{pgid}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._owner == os.getpid() else None


#: The process-wide reaper of the components' process groups.
REAPER = GroupReaper()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ensure_port_free(port: int, host: str = "127.0.0.1", what: str = "component") -> None:
    """Raise a clear error when ``port`` is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LocalStackError(
                f"port {host}:{port} for {what} is busy ({exc.strerror}); "
                "stop whatever listens there or choose another port"
            ) from exc


def http_ok(url: str, timeout: float = 2.0, **kwargs: Any) -> bool:
    """Whether ``GET url`` answers 200 (any transport error is "no")."""
    try:
        return httpx.get(url, timeout=timeout, **kwargs).status_code == 200
    except httpx.HTTPError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One child process with a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    #: the process group is killed when this process dies (:data:`REAPER`)
    die_with_parent: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # no preexec_fn: a vfork, safe in a gRPC process
            )
        except FileNotFoundError as exc:
            raise LocalStackError(f"{self.name}: cannot execute {self.argv[0]}: {exc}") from exc
        finally:
            log.close()
        if self.die_with_parent:
            REAPER.watch(self.proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        """Raise :class:`ComponentExited` with the last log lines when the process is gone."""
        if self.proc is None:
            raise ComponentExited(f"{self.name} was never started")
        code = self.proc.poll()
        if code is not None:
            raise ComponentExited(
                f"{self.name} exited early with code {code}; last lines of {self.log_path}:\n"
                + tail(self.log_path)
            )

    def wait_until(
        self, check: Callable[[], bool], timeout: float, what: str = "healthy", interval: float = 0.2
    ) -> None:
        """Poll ``check`` until it is true; fail fast when the process dies, clearly on timeout."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            self.check_running()
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - a probe failing is "not yet"
                last_exc = exc
            time.sleep(interval)
        self.check_running()
        raise LocalStackError(
            f"{self.name} did not become {what} within {timeout:.0f}s"
            + (f" (last probe error: {last_exc})" if last_exc else "")
            + f"; last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``grace`` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # children that outlived the leader in the same group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.die_with_parent:
            REAPER.forget(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, for the chaos tests); ``start()`` again
        runs the same command line."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.die_with_parent:
            REAPER.forget(self.proc.pid)


@dataclass
class LoopbackServer(Component):
    """A component that is one server process on a loopback port, with files under ``workdir``.

    ``port`` None picks a free one; a given port must be free. Subclasses start ``process`` in
    ``_start()`` after :meth:`_claim_port`, and add their fields keyword-only.
    """

    workdir: Path
    port: int | None = None
    host: str = "127.0.0.1"
    startup_timeout: float = 60.0
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _claim_port(self, what: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port:
            ensure_port_free(self.port, self.host, what=what)
        else:
            self.port = free_port(self.host)

    def check(self) -> None:
        """Raise when the process has died."""
        if self.process:
            self.process.check_running()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def healthy(self) -> bool:
        """Whether the server answers (subclasses probe their own endpoint)."""
        return self.process is not None and self.process.running()

    def halt(self, kill: bool = False) -> None:
        """Take the server down (SIGTERM, or SIGKILL with ``kill``), keeping its port and files,
        so that :meth:`resume` brings the same server back with its data."""
        if self.process and kill:
            self.process.kill()
        elif self.process:
            self.process.stop()

    def resume(self) -> float:
        """Start the halted server again on the same port with the same data; the seconds it
        took until healthy."""
        assert self.process is not None, "resume() of a server that was never started"
        began = time.monotonic()
        ensure_port_free(self.port or 0, self.host, what=self.process.name)
        self.process.start()
        self.process.wait_until(self.healthy, timeout=self.startup_timeout, what="healthy")
        return time.monotonic() - began

    def restart(self, down_for: float = 0.0, kill: bool = False) -> float:
        """:meth:`halt`, stay down ``down_for`` seconds, :meth:`resume`; the seconds from the
        restart until healthy again (the time down excluded)."""
        self.halt(kill=kill)
        time.sleep(down_for)
        return self.resume()
