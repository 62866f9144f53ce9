"""The official Gateway API CRDs, from the ``sigs.k8s.io/gateway-api`` Go module.

The module zip on the Go module proxy carries ``config/crd/<channel>/*.yaml``, so the CRDs come
from the same place as the control plane's sources, through ``go mod download``, and nothing
is vendored into the repository. The CRD files are copied to the cache
(``$MLOPS_CACHE_DIR/gateway-api/<version>/<channel>/``, default ``~/.cache/mlops-operator``),
so later calls run no ``go`` at all.

``go mod download -json`` reports the extracted module directory (``Dir``); for a module whose
``go.mod`` asks for a newer Go than the local toolchain it reports an ``Error`` but still
downloads the zip, which is then read directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import yaml

from .binaries import cache_root
from .procs import LocalStackError

MODULE = "sigs.k8s.io/gateway-api"
#: The newest release whose go.mod the Go 1.26 toolchain accepts (v1.7.0 wants Go 1.27; it
#: still works, from the zip). Override with ``MLOPS_GATEWAY_API_VERSION``.
DEFAULT_VERSION = "v1.6.3"
CHANNELS = ("standard", "experimental")


def gateway_api_version() -> str:
    """The Gateway API release to install: ``$MLOPS_GATEWAY_API_VERSION`` or the default."""
    return os.environ.get("MLOPS_GATEWAY_API_VERSION") or DEFAULT_VERSION


def cache_dir(version: str, channel: str) -> Path:
    return cache_root() / "gateway-api" / version / channel


def _is_crd(text: str) -> bool:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError:
        return False
    return bool(docs) and all(d.get("kind") == "CustomResourceDefinition" for d in docs)


def crd_files_from_dir(module_dir: Path, channel: str) -> dict[str, str]:
    """File name → text of the CRDs in ``<module_dir>/config/crd/<channel>/`` (other objects,
    such as the ValidatingAdmissionPolicy shipped beside them, are left out)."""
    folder = module_dir / "config" / "crd" / channel
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if _is_crd(text):
            out[path.name] = text
    return out


def crd_files_from_zip(zip_path: Path, version: str, channel: str) -> dict[str, str]:
    """The same, read from the module zip (entries ``<module>@<version>/config/crd/...``)."""
    prefix = f"{MODULE}@{version}/config/crd/{channel}/"
    out = {}
    with zipfile.ZipFile(zip_path) as archive:
        for entry in sorted(archive.namelist()):
            rest = entry.removeprefix(prefix)
            if rest == entry or "/" in rest or not rest.endswith(".yaml"):
                continue
            text = archive.read(entry).decode("utf-8")
            if _is_crd(text):
                out[rest] = text
    return out


def go_mod_download(version: str, go: str = "go", timeout: float = 600) -> dict[str, str]:
    """``go mod download -json <module>@<version>``'s answer (``Dir``, ``Zip``, ``Error``...)."""
    env = dict(os.environ, GOFLAGS="-mod=mod", GO111MODULE="on")
    try:
        with tempfile.TemporaryDirectory() as cwd:  # outside any module
            proc = subprocess.run(
                [go, "mod", "download", "-json", f"{MODULE}@{version}"],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
                env=env,
                check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalStackError(f"go mod download {MODULE}@{version} failed: {exc}") from exc
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise LocalStackError(
            f"go mod download {MODULE}@{version} failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        ) from None
    return info


def _from_download(info: dict[str, str], version: str, channel: str) -> dict[str, str]:
    if info.get("Dir") and Path(info["Dir"]).is_dir():
        files = crd_files_from_dir(Path(info["Dir"]), channel)
    elif info.get("Zip") and Path(info["Zip"]).is_file():
        files = crd_files_from_zip(Path(info["Zip"]), version, channel)
    else:
        raise LocalStackError(
            f"{MODULE}@{version} could not be downloaded: {info.get('Error') or info}"
        )
    if not files:
        raise LocalStackError(f"{MODULE}@{version} has no CRDs in config/crd/{channel}/")
    return files


def ensure_gateway_api_crds(
    version: str | None = None, channel: str = "standard", go: str = "go"
) -> list[Path]:
    """Paths of the Gateway API CRD files of ``channel``, downloading the module if needed."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    version = version or gateway_api_version()
    target = cache_dir(version, channel)
    if (target / ".complete").exists():
        return sorted(target.glob("*.yaml"))
    files = _from_download(go_mod_download(version, go=go), version, channel)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{channel}-"))
    staging.chmod(0o755)
    for name, text in files.items():
        (staging / name).write_text(text, encoding="utf-8")
    (staging / ".complete").write_text(f"{MODULE}@{version}\n", encoding="utf-8")
    try:
        staging.rename(target)
    except OSError:  # another process finished first (or a stale partial copy is there)
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(target.glob("*.yaml"))
