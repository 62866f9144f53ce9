"""Binary resolution: where it looks, in which order, and what it says when nothing is there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlops_localstack import binaries
from mlops_localstack.procs import LocalStackError


def _fake(path: Path, body: str = "#!/bin/sh\necho fake\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No assets, an empty PATH and an empty cache."""
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLOPS_LOCAL_DOWNLOAD", raising=False)
    return tmp_path


def test_missing_binaries_name_every_place_looked(isolated: Path) -> None:
    with pytest.raises(LocalStackError) as err:
        binaries.ensure_binaries(allow_build=False)
    msg = str(err.value)
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        assert f"{name}: looked in" in msg
    assert "$KUBEBUILDER_ASSETS (unset)" in msg
    assert "$PATH" in msg
    assert str(isolated / "cache") in msg
    assert "MLOPS_LOCAL_DOWNLOAD=1" in msg
    assert "mlops-operator local build" in msg


def test_assets_win_over_path_and_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in binaries.CONTROL_PLANE:
        _fake(isolated / "assets" / name)
        _fake(isolated / "bin" / name)
        _fake(binaries.cache_dir() / name)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(isolated / "assets"))
    found = binaries.ensure_binaries(allow_build=False)
    assert found.kube_apiserver == isolated / "assets" / "kube-apiserver"
    assert found.etcd == isolated / "assets" / "etcd"


def test_cache_is_used_when_nothing_else(isolated: Path) -> None:
    for name in binaries.CONTROL_PLANE:
        _fake(binaries.cache_dir() / name)
    found = binaries.ensure_binaries(allow_build=False)
    assert found.kube_controller_manager == binaries.cache_dir() / "kube-controller-manager"


def test_old_etcd_on_path_is_skipped_with_a_reason(isolated: Path) -> None:
    _fake(isolated / "bin" / "etcd", "#!/bin/sh\necho 'etcd Version: 3.4.30'\n")
    with pytest.raises(LocalStackError) as err:
        binaries.ensure_binaries(allow_build=False)
    assert "skipped, version 3.4.30 is older than 3.5.13" in str(err.value)


def test_new_etcd_on_path_is_accepted(isolated: Path) -> None:
    _fake(isolated / "bin" / "etcd", "#!/bin/sh\necho 'etcd Version: 3.6.6'\n")
    found, _ = binaries.find_binaries()
    assert found["etcd"] == isolated / "bin" / "etcd"


def test_cache_dir_honours_env(isolated: Path) -> None:
    assert binaries.cache_dir() == isolated / "cache" / "k8s" / binaries.K8S_VERSION
    assert not str(binaries.cache_dir()).startswith(os.getcwd())


def test_build_without_go_says_so(isolated: Path) -> None:
    with pytest.raises(LocalStackError, match="no `go` on PATH"):
        binaries.build(["kube-apiserver"], verbose=False)


def test_build_script_pins_every_staging_module() -> None:
    script = binaries.BUILD_SCRIPT.read_text()
    # the staging list is read from the release's own go.mod, not hard-coded
    assert "./staging/src/" in script and "go mod edit -replace" in script
    assert "CGO_ENABLED=0" in script and "-trimpath" in script
    assert "k8s.io/component-base/version.gitVersion" in script
    assert "flock" in script
