"""Managed processes: early exits carry their last log lines, busy ports are named."""

from __future__ import annotations

import socket
import sys
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
