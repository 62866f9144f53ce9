"""Dockerfile.operator: hadolint-clean, multi-stage, pinned, non-root (no Docker engine here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile.operator"


def _final_stage() -> list[str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    assert len(stages) >= 2, "multi-stage"
    return stages[-1]


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pinned_slim_base_non_root_no_build_tools() -> None:
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert arg and re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", arg.group(1))
    final = _final_stage()
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    body = "\n".join(final)
    for tool in ("gcc", "build-essential", "pip install", "apt-get install"):
        assert tool not in body
    assert any(line.startswith("COPY --from=build") for line in final)


def test_entrypoint_runs_the_operator_with_a_liveness_probe() -> None:
    body = "\n".join(_final_stage())
    assert 'ENTRYPOINT ["mlops-operator"]' in body
    assert "--liveness" in body and "/healthz" in body
    assert re.search(r"^HEALTHCHECK .*/healthz", body, re.M)
