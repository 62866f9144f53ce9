"""Helpers of the TrainingRun integration tests: apply/read TrainingRuns, poll, MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops_localstack.cluster import poll

__all__ = ["poll"]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "iris" / "trainingrun.yaml"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Kube:
    """kubectl bound to the test's namespace, with JSON reads."""

    kubectl: Callable[..., Any]
    namespace: str

    def apply(self, manifest: str | dict) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=text)

    def get(self, kind: str, name: str | None = None, selector: str | None = None) -> Any:
        args = ["get", kind, "-n", self.namespace, "-o", "json"]
        if name:
            args.insert(2, name)
        if selector:
            args += ["-l", selector]
        out = self.kubectl(*args, check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise AssertionError(out.stderr)
        data = json.loads(out.stdout)
        return data if name else data["items"]

    def tr(self, name: str) -> dict:
        return self.get("trainingrun", name) or {}

    def wait_terminal(self, name: str, timeout: float = 240) -> dict:
        def done() -> dict | None:
            tr = self.tr(name)
            return tr if (tr.get("status") or {}).get("phase") in TERMINAL else None

        tr = poll(f"TrainingRun {name} to finish", done, timeout=timeout)
        print(f"TrainingRun {name}: {tr['status'].get('phase')}: {tr['status'].get('message')}")
        return tr

    def events(self, name: str) -> list[dict]:
        return [
            e for e in self.get("events") or [] if e.get("involvedObject", {}).get("name") == name
        ]


def example(name: str | None = None, **spec: Any) -> dict:
    """The iris example, optionally renamed and with spec fields replaced."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    if name:
        doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    return doc


def runs_of(client: Any, namespace: str, name: str) -> list[Any]:
    """Every MLflow run (any experiment, any state) tagged with TrainingRun namespace/name."""
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(
        exps, f"tags.`mlops.dev/trainingrun` = '{namespace}/{name}'", run_view_type=ViewType.ALL
    )


def versions_of(client: Any, model: str, uid: str) -> list[Any]:
    """Registry versions of ``model`` registered for TrainingRun ``uid``."""
    return client.search_model_versions(
        f"name = '{model}' and tags.`mlops.dev/registration-key` = '{uid}'"
    )


def training_run(name: str, model: str = "iris", **spec: Any) -> dict:
    """A small TrainingRun on sklearn://iris with the reference trainer and no retries."""
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "image": "ghcr.io/mlops-operator/runtime:0.1.0",
            "dataset": {"uri": "sklearn://iris"},
            "backoffLimit": 0,
            **spec,
        },
    }


def condition(tr: dict, type_: str) -> dict:
    """The condition ``type_`` of a TrainingRun ({} when absent)."""
    conds = (tr.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})
