"""kubectl bound to a test's namespace, with JSON reads: the one helper the suites share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass
class Kube:
    """kubectl bound to the test's namespace, with JSON reads."""

    kubectl: Callable[..., Any]
    namespace: str

    def apply(self, manifest: str | dict) -> Any:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)

    def get(self, kind: str, name: str | None = None, selector: str | None = None) -> Any:
        """One object (None when it does not exist) or the list of a kind (``items``)."""
        args = ["get", kind, *([name] if name else []), "-n", self.namespace, "-o", "json"]
        out = self.kubectl(*args, *(["-l", selector] if selector else []), check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise AssertionError(out.stderr)
        data = json.loads(out.stdout)
        return data if name else data["items"]

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events about the object ``name``."""
        return [e for e in self.get("events") or []
                if e.get("involvedObject", {}).get("name") == name]
