"""Conformance with the KServe Python SDK's clients (REST JSON, REST binary, gRPC).

``kserve`` cannot live in the project's venv (it pins pandas<3, psutil<6, protobuf<7), so it gets
its own, created on first use from PyPI in the stack's cache directory (``~/.cache/mlops-operator/
venvs/``, outside the repository, so a CI run on a fresh clone reuses it), and the clients run in
a subprocess of that venv (kserve_client_check.py) against servers in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_localstack.binaries import cache_root

KSERVE = "kserve==0.21.0"
VENV = cache_root() / "venvs" / f"{KSERVE.replace('==', '-')}-py{sys.version_info[0]}.{sys.version_info[1]}"
CHECK = Path(__file__).with_name("kserve_client_check.py")
NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]  # fmt: skip
PATHS = ["rest-json", "rest-binary", "grpc"]

pytestmark = pytest.mark.slow


def kserve_python() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", KSERVE],
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot install {KSERVE} into {VENV}: {done.stderr[-500:]}")
        (VENV / ".complete").write_text(KSERVE)
    return python


@pytest.fixture(scope="module")
def report(module_servers) -> dict:  # noqa: ANN001
    python = kserve_python()
    servers = {k: {"http": s.http, "grpc": s.grpc} for k, s in module_servers.items()}
    done = subprocess.run([str(python), str(CHECK), json.dumps(servers)], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", PATHS)
def test_every_datatype_round_trips(report: dict, path: str) -> None:
    results = {d: report[f"{path}/roundtrip/{d}"] for d in [*NUMERIC, "BYTES"]}
    if path == "rest-json":  # the client refuses this itself: FP16 only as binary data
        assert results.pop("FP16").startswith("InvalidInput: Sending FP16 data via JSON")
    assert results == {d: True for d in results}


@pytest.mark.parametrize("path", PATHS)
def test_health_and_iris(report: dict, path: str) -> None:
    if path != "rest-binary":  # health has no binary variant
        assert report[f"{path}/iris/health"] == [True, True, True]
        # not ready: gRPC answers false; KServe's REST client raises on the server's 503 and
        # answers false on the model's
        not_ready = [True, False, False] if path == "grpc" else [True, "503", False]
        assert report[f"{path}/empty/health"] == not_ready
    assert report[f"{path}/iris"] == [0]


@pytest.mark.parametrize("path", PATHS)
def test_documented_errors(report: dict, path: str) -> None:
    grpc = {
        "unknown model": "StatusCode.NOT_FOUND",
        "wrong datatype": "StatusCode.INVALID_ARGUMENT",
        "wrong width": "StatusCode.INVALID_ARGUMENT",
        "unknown output": "StatusCode.INVALID_ARGUMENT",
        "not ready": "StatusCode.UNAVAILABLE",
    }
    rest = {"unknown model": "404", "wrong datatype": "400", "wrong width": "400",
            "unknown output": "400", "not ready": "503"}  # fmt: skip
    expected = grpc if path == "grpc" else rest
    assert {k: report[f"{path}/error/{k}"] for k in expected} == expected
