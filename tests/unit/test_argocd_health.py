"""The Argo CD health script, run by a real Lua 5.1 interpreter (Argo CD embeds gopher-lua, 5.1)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "charts/mlops-operator/files/argocd/health.lua"


def _lua(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    return json.dumps(value)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = shutil.which("lua5.1") or shutil.which("lua")
    assert lua, "a Lua interpreter is needed (.ci/run installs lua5.1)"
    prog = (
        f"obj = {_lua(obj)}\n"
        f"local hs = assert(loadfile({json.dumps(str(SCRIPT))}))()\n"
        "io.write(hs.status .. '|' .. hs.message)\n"
    )
    out = subprocess.run([lua, "-"], input=prog, capture_output=True, text=True, check=True)
    status, _, message = out.stdout.partition("|")
    return status, message


def cond(type_: str, status: str, reason: str = "R", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


META = {"name": "x", "generation": 2}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "Progressing"),
        ({"observedGeneration": 1, "phase": "Succeeded",
          "conditions": [cond("Ready", "True")]}, "Progressing"),
        ({"observedGeneration": 2, "phase": "Succeeded",
          "conditions": [cond("Ready", "True", message="trained")]}, "Healthy"),
        ({"observedGeneration": 2, "phase": "Promoted",
          "conditions": [cond("Ready", "True")]}, "Healthy"),
        ({"observedGeneration": 2, "phase": "Running",
          "conditions": [cond("Ready", "False", "JobRunning")]}, "Progressing"),
        ({"observedGeneration": 2, "phase": "Failed",
          "conditions": [cond("Ready", "False", "BackoffLimitExceeded", "exit code 1")]},
         "Degraded"),
        ({"observedGeneration": 2, "phase": "Rejected",
          "conditions": [cond("Ready", "False", "GateFailed")]}, "Degraded"),
        ({"observedGeneration": 2, "phase": "AwaitingApproval",
          "conditions": [cond("Ready", "False", "AwaitingApproval")]}, "Suspended"),
        ({"observedGeneration": 2, "phase": "Progressing",
          "conditions": [cond("Ready", "True"), cond("Degraded", "True", "AnalysisFailed")]},
         "Degraded"),
    ],
)
def test_health(status: dict[str, Any] | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": META}
    if status is not None:
        obj["status"] = status
    assert health(obj)[0] == expected


def test_message_comes_from_the_condition() -> None:
    obj = {"metadata": META, "status": {"observedGeneration": 2, "phase": "Failed",
                                        "conditions": [cond("Ready", "False", "X", "exit 3")]}}
    assert health(obj) == ("Degraded", "exit 3")
