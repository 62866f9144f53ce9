"""Commands from images, executable lookup, exit codes, log tails, probe thresholds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_localstack.node.runtime import (
    DEFAULT_IMAGE_ENTRYPOINTS,
    ContainerConfigError,
    ImageEntrypoint,
    ProbeState,
    container_argv,
    exit_code_of,
    image_repository,
    probe_port,
    resolve_executable,
    tail_log,
)

TABLE = DEFAULT_IMAGE_ENTRYPOINTS


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("ghcr.io/org/mlops-runtime:0.1.0", "ghcr.io/org/mlops-runtime"),
        ("localhost:5000/app@sha256:abc", "localhost:5000/app"),
        ("localhost:5000/app", "localhost:5000/app"),
        ("python:3.11-slim", "python"),
    ],
)
def test_image_repository(image: str, repo: str) -> None:
    assert image_repository(image) == repo


def test_command_and_args_like_docker() -> None:
    assert container_argv({"image": "anything", "command": ["a", "b"], "args": ["c"]}, TABLE) == [
        "a", "b", "c"]
    runtime = "ghcr.io/acme/mlops-runtime:1.0"
    assert container_argv({"image": runtime, "args": ["serve", "--port", "8080"]}, TABLE) == [
        "mlops-runtime", "serve", "--port", "8080"]
    assert container_argv({"image": "mlops-runtime"}, TABLE) == ["mlops-runtime"]
    assert container_argv({"image": "python:3.11"}, TABLE) == ["python3"]
    assert container_argv({"image": "python:3.11", "args": ["-c", "pass"]}, TABLE) == [
        "-c", "pass"]  # python has no ENTRYPOINT: args replace CMD entirely
    custom = {"my/img": ImageEntrypoint(("tini", "--"), ("app",))}
    assert container_argv({"image": "my/img:2", "args": ["x"]}, custom) == ["tini", "--", "x"]


def test_unknown_image_without_command_fails_clearly() -> None:
    with pytest.raises(ContainerConfigError) as err:
        container_argv({"image": "nginx:1.27"}, TABLE)
    assert err.value.reason == "ImageEntrypointUnknown"
    assert "nginx:1.27" in err.value.message
    with pytest.raises(ContainerConfigError):
        container_argv({"image": "nginx:1.27", "args": ["-g", "daemon off;"]}, TABLE)


def test_resolve_executable(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    path = f"{bindir}{os.pathsep}/usr/bin:/bin"
    assert resolve_executable("mytool", path, tmp_path) == str(tool)
    # an image-only absolute path falls back to the basename on PATH
    assert resolve_executable("/opt/venv/bin/mytool", path, tmp_path) == str(tool)
    assert resolve_executable(str(tool), "", tmp_path) == str(tool)
    with pytest.raises(ContainerConfigError) as err:
        resolve_executable("definitely-not-here", path, tmp_path)
    assert err.value.reason == "StartError"


def test_exit_codes() -> None:
    assert exit_code_of(0) == (0, None)
    assert exit_code_of(3) == (3, None)
    assert exit_code_of(-9) == (137, 9)
    assert exit_code_of(-15) == (143, 15)


def test_tail_log_since_offset(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("old run\n" + "".join(f"line {i}\n" for i in range(30)))
    offset = len("old run\n")
    tail = tail_log(log, offset, lines=20)
    assert tail.splitlines()[0] == "line 10"
    assert tail.splitlines()[-1] == "line 29"
    assert "old run" not in tail_log(log, offset, lines=100)
    assert tail_log(tmp_path / "missing.log") == ""


def test_probe_port() -> None:
    assert probe_port(8080, {}) == 8080
    assert probe_port("8080", {}) == 8080
    assert probe_port("http", {"http": 9000}) == 9000
    with pytest.raises(ValueError):
        probe_port("metrics", {"http": 9000})


def test_readiness_thresholds() -> None:
    probe = {"initialDelaySeconds": 5, "periodSeconds": 2, "successThreshold": 2,
             "failureThreshold": 2}
    state = ProbeState("readiness", probe, container_started=100.0)
    assert not state.result
    assert not state.due(104.9) and state.due(105.0)
    assert not state.record(True, 105.0)  # 1 of 2 successes
    assert state.next_at == 107.0
    assert state.record(True, 107.0) and state.result
    assert not state.record(False, 109.0) and state.result  # 1 of 2 failures
    assert state.record(False, 111.0) and not state.result


def test_liveness_starts_healthy_and_needs_one_success() -> None:
    state = ProbeState("liveness", {"successThreshold": 5, "failureThreshold": 1},
                       container_started=0.0)
    assert state.result
    assert state.record(False, 1.0) and not state.result
    assert state.record(True, 2.0) and state.result


def test_tcp_and_exec_probes(tmp_path: Path) -> None:
    import socket

    from mlops_localstack.node.runtime import run_probe

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        ok, _ = run_probe({"tcpSocket": {"port": "web"}}, pod_ip="127.0.0.1",
                          ports={"web": port}, env=env, cwd=tmp_path)
        assert ok
    ok, msg = run_probe({"tcpSocket": {"port": port}}, pod_ip="127.0.0.1", ports={}, env=env,
                        cwd=tmp_path)
    assert not ok and "probe failed" in msg
    assert run_probe({"exec": {"command": ["true"]}}, pod_ip="", ports={}, env=env,
                     cwd=tmp_path)[0]
    ok, msg = run_probe({"exec": {"command": ["sh", "-c", "echo nope; exit 2"]}}, pod_ip="",
                        ports={}, env=env, cwd=tmp_path)
    assert not ok and "exited 2" in msg and "nope" in msg
