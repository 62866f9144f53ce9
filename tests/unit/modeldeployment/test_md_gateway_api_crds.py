"""Finding the Gateway API CRDs in the Go module (directory or zip) and caching them."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from mlops_localstack.gateway_api import (
    MODULE,
    crd_files_from_dir,
    crd_files_from_zip,
    ensure_gateway_api_crds,
)
from mlops_localstack.procs import LocalStackError

VERSION = "v1.2.3"
CRD = yaml.safe_dump(
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
    }
)
VAP = yaml.safe_dump(
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "safe-upgrades.gateway.networking.k8s.io"},
    }
)
FILES = {
    "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml": CRD,
    "config/crd/standard/gateway.networking.k8s.io_vap_safeupgrades.yaml": VAP,
    "config/crd/standard/kustomization.yml": "resources: []\n",
    "config/crd/experimental/gateway.networking.k8s.io_tcproutes.yaml": CRD,
    "config/crd/standard/nested/other.yaml": CRD,
}


def module_zip(tmp_path: Path) -> Path:
    path = tmp_path / f"{VERSION}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in FILES.items():
            archive.writestr(f"{MODULE}@{VERSION}/{name}", text)
    return path


def module_dir(tmp_path: Path) -> Path:
    root = tmp_path / f"gateway-api@{VERSION}"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def fake_go(tmp_path: Path, answer: dict) -> str:
    """A ``go`` that answers ``mod download -json`` with ``answer`` and logs its calls."""
    script = tmp_path / "go"
    log = tmp_path / "go.calls"
    script.write_text(
        f"#!/bin/sh\necho \"$@\" >> {log}\ncat <<'EOF'\n{json.dumps(answer)}\nEOF\n"
        + ("exit 1\n" if "Error" in answer else "")
    )
    script.chmod(0o755)
    return str(script)


def test_only_the_channels_crds_are_taken(tmp_path: Path) -> None:
    expected = {"gateway.networking.k8s.io_httproutes.yaml": CRD}
    assert crd_files_from_zip(module_zip(tmp_path), VERSION, "standard") == expected
    assert crd_files_from_dir(module_dir(tmp_path), "standard") == expected


@pytest.mark.parametrize(
    "source",
    ["dir", "zip"],  # zip: go.mod wants a newer Go; `go` reports an Error but has the zip
)
def test_download_is_cached_and_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "cache"))
    answer: dict = {"Path": MODULE, "Version": VERSION}
    if source == "dir":
        answer["Dir"] = str(module_dir(tmp_path))
    else:
        answer.update(Zip=str(module_zip(tmp_path)), Error="requires go >= 1.99")
    go = fake_go(tmp_path, answer)
    paths = ensure_gateway_api_crds(VERSION, go=go)
    assert [p.name for p in paths] == ["gateway.networking.k8s.io_httproutes.yaml"]
    assert paths[0].read_text() == CRD
    assert paths[0].is_relative_to(tmp_path / "cache" / "gateway-api" / VERSION / "standard")
    calls = (tmp_path / "go.calls").read_text().splitlines()
    assert calls == [f"mod download -json {MODULE}@{VERSION}"]
    assert ensure_gateway_api_crds(VERSION, go=go) == paths
    assert len((tmp_path / "go.calls").read_text().splitlines()) == 1  # served from the cache


def test_a_version_that_does_not_exist_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "cache"))
    go = fake_go(tmp_path, {"Path": MODULE, "Version": "v9.9.9", "Error": "403 Forbidden"})
    with pytest.raises(LocalStackError, match="403 Forbidden"):
        ensure_gateway_api_crds("v9.9.9", go=go)
    assert not (tmp_path / "cache" / "gateway-api" / "v9.9.9" / "standard").exists()


def test_unknown_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="channel"):
        ensure_gateway_api_crds(VERSION, channel="nightly")
