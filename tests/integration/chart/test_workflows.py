"""The GitHub workflows: actionlint-clean (actionlint built from the Go module proxy, like helm)
and they do what docs/install.md says they do."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
WORKFLOWS = REPO / ".github" / "workflows"
ACTIONLINT_VERSION = "v1.7.7"


def actionlint() -> Path:
    """actionlint on PATH, else ``go install``-ed once into the cache dir."""
    found = shutil.which("actionlint")
    if found:
        return Path(found)
    cache = Path(os.environ.get("MLOPS_CACHE_DIR") or Path.home() / ".cache/mlops-operator")
    gobin = cache / "actionlint" / ACTIONLINT_VERSION
    target = gobin / "actionlint"
    if target.exists():
        return target
    go = shutil.which("go") or "/usr/local/go/bin/go"
    assert Path(go).exists(), "Go is needed to build actionlint from the Go module proxy"
    gobin.mkdir(parents=True, exist_ok=True)
    with open(gobin / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            env = {**os.environ, "GOBIN": str(gobin), "CGO_ENABLED": "0",
                   "GOFLAGS": "-buildvcs=false"}
            out = subprocess.run(
                [go, "install", f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"],
                env=env, capture_output=True, text=True, timeout=900, cwd=gobin)
            assert out.returncode == 0, out.stderr
    return target


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_the_three_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= {"ci.yml", "e2e-kind.yml", "release.yml"}


def test_actionlint_is_clean() -> None:
    out = subprocess.run([str(actionlint()), "-no-color"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check can fail: an unknown runner label and a bad expression are reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latestt\n"
                   "    steps:\n      - run: echo ${{ github.nope.value }\n")
    out = subprocess.run([str(actionlint()), "-no-color", str(bad)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1 and "bad.yml" in out.stdout


def test_ci_runs_make_test_on_the_local_stack_never_kind() -> None:
    ci = load("ci.yml")
    steps = [s for job in ci["jobs"].values() for s in job["steps"]]
    test = next(s for s in steps if "ci/run" in s.get("run", ""))
    assert test["env"]["PYTEST_ARGS"] == "--cluster=local"
    assert not any("kind" in str(s.get("uses", "")) for s in steps)
    assert any("make lint" in s.get("run", "") for s in steps)


def test_e2e_builds_both_images_loads_them_into_kind_and_installs_the_chart() -> None:
    steps = load("e2e-kind.yml")["jobs"]["e2e"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    files = {s["with"]["file"] for s in steps if "build-push-action" in s.get("uses", "")}
    assert files == {"Dockerfile.operator", "Dockerfile.runtime"}
    assert runs.count("kind load docker-image") == 2
    assert "helm\" install" in runs and "--cluster=kubeconfig" in runs


@pytest.mark.parametrize("job", ["images", "chart"])
def test_release_runs_on_tags_only(job: str) -> None:
    rel = load("release.yml")
    on = rel.get("on") or rel.get(True)  # YAML 1.1 reads the key `on` as True
    assert set(on) == {"push"} and on["push"] == {"tags": ["v*.*.*"]}
    assert job in rel["jobs"]
    if job == "chart":
        runs = "\n".join(s.get("run", "") for s in rel["jobs"]["chart"]["steps"])
        assert "push \"dist/mlops-operator-$version.tgz\" \"oci://" in runs
