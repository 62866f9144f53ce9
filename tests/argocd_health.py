"""Run the chart's Argo CD health script on an object the way Argo CD does: in gopher-lua (the
Lua 5.1 Argo CD embeds), through ``hack/argocd-health`` (a small Go program built from the Go
module proxy, like helm). Shared by the unit table and the tests that check live objects.

The binary is built once into ``$MLOPS_CACHE_DIR`` (default ``~/.cache/mlops-operator``),
under a name that carries a digest of its sources, so an edited ``main.go`` is rebuilt.
``make argocd-health`` builds the same file ahead of time; nothing is needed from apt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "charts/mlops-operator/files/argocd/health.lua"
SOURCE = REPO / "hack/argocd-health"


def _cache_dir() -> Path:
    return Path(os.environ.get("MLOPS_CACHE_DIR") or Path.home() / ".cache/mlops-operator")


def binary_path() -> Path:
    """Where the helper for the current sources lives (built or not)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    return _cache_dir() / "argocd-health" / f"argocd-health-{digest.hexdigest()[:12]}"


def ensure_binary() -> Path:
    """Build ``hack/argocd-health`` from the Go module proxy once (a lock keeps parallel test
    workers from building twice); return the binary."""
    target = binary_path()
    if target.exists():
        return target
    go = shutil.which("go") or "/usr/local/go/bin/go"
    assert Path(go).exists(), "Go is needed to build hack/argocd-health (gopher-lua)"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}
            out = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=SOURCE,
                                 env=env, capture_output=True, text=True, timeout=900)
            assert out.returncode == 0, f"building hack/argocd-health failed:\n{out.stderr}"
            tmp.rename(target)
    return target


def health(obj: dict[str, Any], script: Path = SCRIPT) -> tuple[str, str]:
    """Argo CD's verdict on ``obj``: ``(status, message)``."""
    out = subprocess.run([str(ensure_binary()), str(script)], input=json.dumps(obj),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"health script failed: {out.stderr.strip()}"
    status, _, message = out.stdout.partition("|")
    return status, message
