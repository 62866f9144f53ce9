"""Run the chart's Argo CD health script on an object (a real Lua 5.1, as Argo CD embeds
gopher-lua, 5.1): shared by the unit table and the tests that check live objects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "charts/mlops-operator/files/argocd/health.lua"


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
