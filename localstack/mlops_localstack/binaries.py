"""Find (or build) the Kubernetes and etcd binaries of the local control plane.

Resolution order, per binary — the first hit wins:

1. ``$KUBEBUILDER_ASSETS`` (the envtest convention),
2. ``$PATH`` (an etcd older than 3.5.13, such as Debian's 3.4, is skipped: current
   kube-apiservers need a newer one),
3. the cache dir ``$MLOPS_CACHE_DIR/k8s/<version>/`` (default ``~/.cache/mlops-operator``),
4. the official release binaries, only when ``MLOPS_LOCAL_DOWNLOAD=1`` (off by default: many
   machines that run this, CI included, reach package registries only),
5. a build from the Go module proxy (``build-binaries.sh`` beside this file), cached in 3.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .procs import LocalStackError

K8S_VERSION = os.environ.get("MLOPS_K8S_VERSION", "v1.34.4")
ETCD_VERSION = os.environ.get("MLOPS_ETCD_VERSION", "v3.6.6")
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")
BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")
_MIN_ETCD = (3, 5, 13)


def cache_root() -> Path:
    """The cache directory, outside any repository."""
    env = os.environ.get("MLOPS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlops-operator"


def cache_dir(version: str = K8S_VERSION) -> Path:
    return cache_root() / "k8s" / version


@dataclass(frozen=True)
class Binaries:
    """Paths of the control-plane binaries (kubectl may come from elsewhere)."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path | None

    def server_version(self) -> str:
        out = subprocess.run(
            [str(self.kube_apiserver), "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip().removeprefix("Kubernetes ").strip()


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _etcd_too_old(path: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "does not run"
    m = re.search(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        return None
    found = tuple(int(x) for x in m.groups())
    if found < _MIN_ETCD:
        return f"version {'.'.join(map(str, found))} is older than 3.5.13"
    return None


def _find_one(name: str, looked: list[str]) -> Path | None:
    if name == "kubectl":
        # a kubectl of the server's own version beats an older one on PATH
        cand = cache_dir() / name
        if _executable(cand):
            return cand
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        cand = Path(assets) / name
        if _executable(cand):
            return cand
        looked.append(f"$KUBEBUILDER_ASSETS ({cand})")
    else:
        looked.append("$KUBEBUILDER_ASSETS (unset)")
    on_path = shutil.which(name)
    if on_path:
        cand = Path(on_path)
        problem = _etcd_too_old(cand) if name == "etcd" else None
        if problem is None:
            return cand
        looked.append(f"$PATH ({cand}: skipped, {problem})")
    else:
        looked.append("$PATH")
    cand = cache_dir() / name
    if _executable(cand):
        return cand
    looked.append(f"cache ({cand})")
    return None


def find_binaries() -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Locate what exists without downloading or building; also report where we looked."""
    found: dict[str, Path] = {}
    looked: dict[str, list[str]] = {}
    for name in (*CONTROL_PLANE, "kubectl"):
        looked[name] = []
        path = _find_one(name, looked[name])
        if path:
            found[name] = path
    return found, looked


def _download(names: list[str], dest: Path) -> None:
    """Fetch official release binaries (only when MLOPS_LOCAL_DOWNLOAD=1)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "etcd":
            url = (
                f"https://github.com/etcd-io/etcd/releases/download/{ETCD_VERSION}/"
                f"etcd-{ETCD_VERSION}-linux-amd64.tar.gz"
            )
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310
                data = resp.read()
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.getmember(f"etcd-{ETCD_VERSION}-linux-amd64/etcd")
                extracted = tar.extractfile(member)
                assert extracted is not None
                (dest / "etcd").write_bytes(extracted.read())
        else:
            url = f"https://dl.k8s.io/release/{K8S_VERSION}/bin/linux/amd64/{name}"
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310
                (dest / name).write_bytes(resp.read())
        (dest / name).chmod(0o755 | stat.S_IXUSR)


def build(names: list[str] | None = None, verbose: bool = True) -> Path:
    """Build the binaries from the Go module proxy into the cache; return the cache dir."""
    if shutil.which("go") is None:
        raise LocalStackError(
            "cannot build the control plane: no `go` on PATH (Go 1.24+ is needed); "
            "install Go, or provide binaries via KUBEBUILDER_ASSETS or PATH"
        )
    env = dict(os.environ)
    env["MLOPS_K8S_VERSION"] = K8S_VERSION
    env["MLOPS_ETCD_VERSION"] = ETCD_VERSION
    env["MLOPS_CACHE_DIR"] = str(cache_root())
    if names:
        env["MLOPS_K8S_COMMANDS"] = " ".join(n for n in names if n != "etcd")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        stdout=None if verbose else subprocess.PIPE,
        stderr=None if verbose else subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LocalStackError(
            f"building the control plane from the Go module proxy failed (exit {proc.returncode})"
            + (f":\n{proc.stdout[-4000:]}" if proc.stdout else "")
        )
    return cache_dir()


def ensure_binaries(allow_build: bool = True, verbose: bool = True) -> Binaries:
    """Return usable binaries, downloading or building the missing ones when allowed.

    Raises :class:`LocalStackError` naming every missing binary and every place looked.
    """
    found, looked = find_binaries()
    missing = [n for n in CONTROL_PLANE if n not in found]
    if missing and os.environ.get("MLOPS_LOCAL_DOWNLOAD") == "1":
        try:
            _download(missing, cache_dir())
        except Exception as exc:  # noqa: BLE001 - any failure falls through to a build
            for n in missing:
                looked[n].append(f"official release download ({exc})")
        found, _ = find_binaries()
        missing = [n for n in CONTROL_PLANE if n not in found]
    elif missing:
        for n in missing:
            looked[n].append("official release download (disabled; MLOPS_LOCAL_DOWNLOAD=1)")
    if missing and allow_build:
        build(missing, verbose=verbose)
        found, _ = find_binaries()
        missing = [n for n in CONTROL_PLANE if n not in found]
    if missing:
        lines = [f"  {n}: looked in " + "; ".join(looked[n]) for n in missing]
        raise LocalStackError(
            "missing control-plane binaries:\n"
            + "\n".join(lines)
            + "\nprovide them with KUBEBUILDER_ASSETS=<dir> or on PATH, or build them once with"
            " `mlops-operator local build` (needs Go and the Go module proxy)"
        )
    kubectl = found.get("kubectl")
    return Binaries(
        etcd=found["etcd"],
        kube_apiserver=found["kube-apiserver"],
        kube_controller_manager=found["kube-controller-manager"],
        kubectl=kubectl,
    )
