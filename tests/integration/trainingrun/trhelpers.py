"""Helpers of the TrainingRun integration tests: apply/read TrainingRuns, poll, MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kube_json
import yaml

from mlops_localstack.cluster import poll

__all__ = ["poll"]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "iris" / "trainingrun.yaml"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Kube(kube_json.Kube):
    """kubectl bound to the test's namespace, with TrainingRun reads."""

    def tr(self, name: str) -> dict:
        return self.get("trainingrun", name) or {}

    def wait_terminal(self, name: str, timeout: float = 240) -> dict:
        def done() -> dict | None:
            tr = self.tr(name)
            return tr if (tr.get("status") or {}).get("phase") in TERMINAL else None

        tr = poll(f"TrainingRun {name} to finish", done, timeout=timeout)
        print(f"TrainingRun {name}: {tr['status'].get('phase')}: {tr['status'].get('message')}")
        return tr



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
            "image": "ghcr.io/mlops-operator/mlops-runtime:0.1.0",
            "dataset": {"uri": "sklearn://iris"},
            "backoffLimit": 0,
            **spec,
        },
    }


def condition(tr: dict, type_: str) -> dict:
    """The condition ``type_`` of a TrainingRun ({} when absent)."""
    conds = (tr.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})
