"""DVC datasets: a real local git + DVC repository (local remote) with two revisions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from trhelpers import Kube, runs_of, training_run

pytestmark = [pytest.mark.integration, pytest.mark.dvc]

IRIS_CSV = Path(__file__).resolve().parents[3] / "examples" / "iris" / "data" / "iris.csv"


def _run(cwd: Path, *argv: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, *argv[1:]] if argv[0] == "dvc" else list(argv)
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_dvc_repo(root: Path) -> dict[str, str]:
    """A git repo tracking ``data/iris.csv`` with DVC at tags v1 and v2 (v2 drops rows);
    the data lives only in a local DVC remote. Returns tag → the md5 DVC recorded."""
    repo, remote = root / "repo", root / "remote"
    (repo / "data").mkdir(parents=True)
    remote.mkdir()
    _run(repo, "git", "init", "-q", "-b", "main")
    _run(repo, "dvc", "init", "-q")
    _run(repo, "dvc", "remote", "add", "-d", "local", str(remote))
    _run(repo, "dvc", "config", "core.analytics", "false")
    lines = IRIS_CSV.read_text().splitlines(keepends=True)
    md5s: dict[str, str] = {}
    for tag, rows in (("v1", lines), ("v2", lines[:1] + lines[1::2])):
        (repo / "data" / "iris.csv").write_text("".join(rows))
        _run(repo, "dvc", "add", "-q", "data/iris.csv")
        _run(repo, "git", "add", "-A")
        _run(repo, "git", "commit", "-q", "-m", f"iris {tag}")
        _run(repo, "git", "tag", tag)
        meta = yaml.safe_load((repo / "data" / "iris.csv.dvc").read_text())
        md5s[tag] = meta["outs"][0]["md5"]
        _run(repo, "dvc", "push", "-q")
    _run(repo, "rm", "-rf", ".dvc/cache", "data/iris.csv")  # only the remote has the data
    return md5s


def test_two_revisions_give_two_digests(
    node: Any, operator: Any, kube: Kube, mlflow_client: Any, namespace: str, tmp_path: Path
) -> None:
    md5s = make_dvc_repo(tmp_path)
    assert md5s["v1"] != md5s["v2"]
    repo = str(tmp_path / "repo")
    for tag in ("v1", "v2"):
        kube.apply(
            training_run(
                f"dvc-{tag}",
                model=f"dvc-{namespace[-5:]}",
                dataset={
                    "uri": f"dvc://iris.csv@{tag}",
                    "version": tag,
                    "dvc": {"repo": repo, "path": "data/iris.csv", "rev": tag},
                },
            )
        )
    for tag in ("v1", "v2"):
        tr = kube.wait_terminal(f"dvc-{tag}")
        status = tr["status"]
        assert status["phase"] == "Succeeded", status
        assert status["dataset"]["digest"] == f"md5:{md5s[tag]}"
        (run,) = runs_of(mlflow_client, namespace, f"dvc-{tag}")
        assert run.data.tags["mlops.dev/dvc-rev"] == tag
        assert run.data.tags["mlops.dev/dataset-digest"] == f"md5:{md5s[tag]}"
        (inp,) = run.inputs.dataset_inputs
        assert inp.dataset.digest == md5s[tag]
        assert run.data.metrics["n_train"] + run.data.metrics["n_test"] == (
            150 if tag == "v1" else 75
        )
