"""A handle on "some cluster": the local stack's, kind's, or any kubeconfig's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .procs import LocalStackError

T = TypeVar("T")


@dataclass
class Cluster:
    """A kubeconfig plus a kubectl bound to it."""

    kubeconfig: Path
    kubectl_path: str = field(default_factory=lambda: shutil.which("kubectl") or "kubectl")
    kind: str = "kubeconfig"  # local | kind | kubeconfig

    @property
    def env(self) -> dict[str, str]:
        """The environment for subprocesses that should talk to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on ``check`` failure raise with stderr."""
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise LocalStackError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}"
            )
        return proc

    def apply_crds(self, paths: Iterable[Path], timeout: float = 60) -> list[str]:
        """Apply CRD files (server-side, so big schemas fit) and wait until Established."""
        names: list[str] = []
        for path in paths:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
            out = self.kubectl("get", "-f", str(path), "-o", "name").stdout.split()
            names.extend(out)
        if names:
            self.kubectl(
                "wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *names
            )
        return names

    def server_version(self) -> str:
        out = self.kubectl("version", "-o", "json").stdout
        return str(json.loads(out)["serverVersion"]["gitVersion"])

    def wait_for(
        self, what: str, check: Callable[[], T], timeout: float = 60, interval: float = 0.25
    ) -> T:
        """Poll ``check()`` until it returns a truthy value; return it, or fail naming ``what``."""
        return poll(what, check, timeout=timeout, interval=interval)


def poll(
    what: str,
    check: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.25,
    alive: Callable[[], str | None] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail naming ``what``.

    ``alive`` (optional) is asked between polls; a non-empty answer (e.g. "operator died: ...")
    fails at once instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        if alive is not None and (why := alive()):
            raise AssertionError(f"{why} (while waiting for {what})")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
