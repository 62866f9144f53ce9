"""Managed processes: early exits carry their last log lines, busy ports are named."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlops_localstack.cluster import poll
from mlops_localstack.procs import (
    ComponentExited,
    LocalStackError,
    ManagedProcess,
    ensure_port_free,
    tail,
)


def test_component_that_exits_early_reports_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "broken",
        [sys.executable, "-c", "import sys; print('line one'); print('boom: bad flag'); sys.exit(3)"],
        tmp_path / "broken.log",
    ).start()
    with pytest.raises(ComponentExited) as err:
        proc.wait_until(lambda: False, timeout=30)
    assert "broken exited early with code 3" in str(err.value)
    assert "boom: bad flag" in str(err.value)


def test_timeout_names_the_component_and_what(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "sleepy", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log"
    ).start()
    try:
        with pytest.raises(LocalStackError, match="sleepy did not become ready"):
            proc.wait_until(lambda: False, timeout=0.5, what="ready")
    finally:
        proc.stop(grace=1)
    assert not proc.running()


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid));"
        "time.sleep(120)"
    )
    proc = ManagedProcess("parent", [sys.executable, "-c", code], tmp_path / "p.log").start()
    proc.wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=30)
    child = int(pidfile.read_text())
    proc.stop(grace=2)

    def gone() -> bool:
        try:
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")

    poll("the grandchild to be gone after stop()", gone, timeout=10, interval=0.05)


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LocalStackError, match=f"port 127.0.0.1:{port} for etcd is busy"):
            ensure_port_free(port, what="etcd")


def test_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert tail(tmp_path / "nope.log") == ""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


# A supervisor process of its own (so the test can SIGKILL it): starts a component that starts a
# child of its own, writes "component child reaper" pids to argv[1], and sleeps.
SUPERVISOR = """
import subprocess, sys, time
from pathlib import Path
from mlops_localstack.procs import REAPER, ManagedProcess
out = Path(sys.argv[1])
code = ("import subprocess, sys, time;"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"open({str(out) + '.child'!r}, 'w').write(str(c.pid)); time.sleep(300)")
proc = ManagedProcess("component", [sys.executable, "-c", code], out.with_suffix(".log")).start()
if len(sys.argv) > 2:  # a group whose leader's pid was reused since: its start time differs
    REAPER._send(f"+{sys.argv[2]} 1")
proc.wait_until(lambda: Path(str(out) + ".child").exists(), timeout=60)
child = Path(str(out) + ".child").read_text()
out.write_text(f"{proc.pid} {child} {REAPER.pid}")
time.sleep(300)
"""


def _supervise(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    out = tmp_path / "pids"
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(out), *extra])
    poll("the supervisor's component and its child", lambda: out.exists() and out.read_text(),
         timeout=60, interval=0.05)  # fmt: skip
    return sup, [int(p) for p in out.read_text().split()]


def test_a_killed_supervisor_takes_its_components_children_with_it(tmp_path: Path) -> None:
    """Regression: PR_SET_PDEATHSIG killed only the component; its own children (MLflow's
    uvicorn and job runners) ran on after a test process was SIGKILLed."""
    sup, (component, child, reaper) = _supervise(tmp_path)
    assert not _gone(component) and not _gone(child)
    sup.kill()
    sup.wait(timeout=10)
    poll("the reaper to act on its parent's death", lambda: _gone(reaper), timeout=30,
         interval=0.05)  # fmt: skip
    # the reaper kills before it exits: both are signalled; the kernel finishes them at once
    poll("the component and its child gone", lambda: _gone(component) and _gone(child),
         timeout=10, interval=0.05)  # fmt: skip


def test_the_reaper_leaves_a_group_whose_pid_came_round_to_another_process(tmp_path: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                              start_new_session=True)  # fmt: skip
    try:
        sup, (component, child, reaper) = _supervise(tmp_path, str(victim.pid))
        sup.kill()
        sup.wait(timeout=10)
        poll("the reaper to act on its parent's death", lambda: _gone(reaper), timeout=30,
             interval=0.05)  # fmt: skip
        poll("the component gone", lambda: _gone(component) and _gone(child), timeout=10,
             interval=0.05)  # fmt: skip
        assert victim.poll() is None, "the reaper killed a group it did not start"
    finally:
        victim.kill()
        victim.wait()


def test_a_component_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    """Regression: PR_SET_PDEATHSIG follows the thread that started the child, so a component
    (re)started from a helper thread was SIGKILLed when that thread ended."""
    started: list[ManagedProcess] = []
    native: list[int] = []

    def start() -> None:
        native.append(threading.get_native_id())
        started.append(ManagedProcess(
            "component", [sys.executable, "-c", "import time; time.sleep(300)"],
            tmp_path / "c.log").start())  # fmt: skip

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (proc,) = started
    try:
        # the OS thread is gone (a parent-death signal would have been sent by now)
        poll("the thread gone", lambda: not Path(f"/proc/self/task/{native[0]}").exists(),
             timeout=10, interval=0.01)  # fmt: skip
        assert proc.proc is not None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.proc.wait(timeout=2)  # a SIGKILL sent at the thread's exit lands well within
    finally:
        proc.stop(grace=1)
    assert not proc.running()
