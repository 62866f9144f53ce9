"""Helpers of the chaos suites: the operator process, TrainingRuns in bulk, the tallies."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kube_json
import pytest
import yaml

from mlops_localstack.cluster import poll

__all__ = ["poll"]

TERMINAL = ("Succeeded", "Failed")
#: phases where a ModelVersion's generation is decided (handlers/modelversion.py DECIDED)
MV_TERMINAL = ("Promoted", "Rejected", "Failed", "Validated")
IMAGE = "ghcr.io/mlops-operator/mlops-runtime:0.1.0"
#: the fixed-seed run of ``make test`` (see conftest.py for the options and variables)
DEFAULTS = {"rounds": 1, "runs": 20, "seed": 20261130, "mlflow_down": 20.0}


def chaos_setting(config: pytest.Config, name: str) -> Any:
    """``--chaos-<name>``, else ``MLOPS_CHAOS_<NAME>``, else the default."""
    default = DEFAULTS[name]
    value = config.getoption(f"--chaos-{name.replace('_', '-')}", default=None)
    if value is None:
        env = os.environ.get(f"MLOPS_CHAOS_{name.upper()}")
        value = type(default)(env) if env else default
    return value


def operator_process_class(config: pytest.Config) -> type:
    """``OperatorProcess`` from the root ``tests/conftest.py`` (loaded by pytest as a plugin)."""
    for plugin in config.pluginmanager.get_plugins():
        cls = getattr(plugin, "OperatorProcess", None)
        if isinstance(cls, type):
            return cls
    raise RuntimeError("tests/conftest.py OperatorProcess not found")


def start_operator(op: Any, **env: str) -> bool:
    """Start the operator; False when it died before it was live (a failpoint can fire then).

    On a machine loaded enough that it is not live within the fixture's 90 s (it is stopped
    then), it is started again, up to three times.
    """
    from mlops_localstack.procs import ComponentExited, LocalStackError

    for attempt in range(3):
        try:
            op.start(**env)
        except ComponentExited:
            return False
        except LocalStackError:
            if attempt == 2:
                raise
            print(f"the operator was not live in time (attempt {attempt + 1}); again")
            continue
        return True
    raise AssertionError("unreachable")


def training_run(name: str, model: str, experiment: str, seed: int = 0) -> dict[str, Any]:
    """A cheap TrainingRun: a depth-2 decision tree on sklearn://iris, registered (no promotion)."""
    return {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "experiment": experiment,
            "image": IMAGE,
            "dataset": {"uri": "sklearn://iris"},
            "params": {"model_type": "decision_tree", "max_depth": "2", "seed": str(seed)},
            "backoffLimit": 2,  # a pod starved on a loaded machine may retry; the Job stays one
            "register": {"validation": {"metrics": [{"name": "accuracy", "min": 0.5}]}},
        },
    }


@dataclass
class Kube(kube_json.Kube):
    """kubectl bound to a chaos test's namespace."""

    def apply_all(self, docs: list[dict[str, Any]]) -> None:
        """Apply many objects in one request (they start together)."""
        self.kubectl("apply", "-n", self.namespace, "-f", "-",
                     input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs}))

    def tr_status(self, name: str) -> dict[str, Any]:
        return (self.get("trainingrun", name) or {}).get("status") or {}

    def phases(self, kind: str) -> dict[str, str]:
        return {o["metadata"]["name"]: (o.get("status") or {}).get("phase", "")
                for o in self.get(kind) or []}

    def wait_phases(self, kind: str, names: list[str], done: tuple[str, ...], timeout: float,
                    alive: Callable[[], str | None] | None = None) -> dict[str, str]:
        """Poll until every ``names`` of ``kind`` has a phase in ``done``; progress printed."""
        shown = [0.0]

        def check() -> dict[str, str] | None:
            phases = self.phases(kind)
            if time.monotonic() - shown[0] > 30:
                shown[0] = time.monotonic()
                print(f"  {kind}: {dict(Counter(phases.get(n, '-') for n in names))}")
            return phases if all(phases.get(n) in done for n in names) else None

        return poll(f"every {kind} in {done}", check, timeout=timeout, interval=2, alive=alive)


def mlflow_client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def runs_by_uid(client: Any, experiment: str) -> dict[str, list[Any]]:
    """Every MLflow run of ``experiment`` (any state), by the TrainingRun uid tag."""
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out: dict[str, list[Any]] = defaultdict(list)
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL,
                                  max_results=1000, page_token=token)
        for run in page:
            out[run.data.tags.get("mlops.dev/uid", "?")].append(run)
        token = page.token
        if not token:
            return dict(out)


def versions_by_key(client: Any, model: str) -> dict[str, list[Any]]:
    """Registered versions of ``model``, by registration key (the TrainingRun uid)."""
    out: dict[str, list[Any]] = defaultdict(list)
    with contextlib.suppress(Exception):  # no such model yet: nothing registered
        for v in client.search_model_versions(f"name = '{model}'", max_results=10000):
            out[v.tags.get("mlops.dev/registration-key", "?")].append(v)
    return dict(out)


def tally(kube: Kube, client: Any, model: str, experiment: str) -> dict[str, Any]:
    """Per TrainingRun: its Jobs, MLflow runs, registry versions and ModelVersions.

    Returns counts and every TrainingRun whose count of any of them is not exactly one
    (``duplicates``: more than one; ``missing``: none).
    """
    trs = kube.get("trainingruns") or []
    uids = {tr["metadata"]["uid"]: tr for tr in trs}

    def owner(obj: dict[str, Any]) -> str:
        refs = obj["metadata"].get("ownerReferences") or []
        return next((r["uid"] for r in refs if r.get("kind") == "TrainingRun"), "?")

    jobs: dict[str, list[Any]] = defaultdict(list)
    for job in kube.get("jobs") or []:
        jobs[owner(job)].append(job)
    mvs: dict[str, list[Any]] = defaultdict(list)
    for mv in kube.get("modelversions") or []:
        mvs[owner(mv)].append(mv)
    runs = runs_by_uid(client, experiment)
    versions = versions_by_key(client, model)
    problems: dict[str, dict[str, int]] = {}
    for uid, tr in uids.items():
        counts = {"jobs": len(jobs.get(uid, [])), "runs": len(runs.get(uid, [])),
                  "versions": len(versions.get(uid, [])), "modelversions": len(mvs.get(uid, []))}
        if any(n != 1 for n in counts.values()):
            problems[tr["metadata"]["name"]] = counts
    strays = {
        "jobs": sum(len(v) for k, v in jobs.items() if k not in uids),
        "runs": sum(len(v) for k, v in runs.items() if k not in uids),
        "versions": sum(len(v) for k, v in versions.items() if k not in uids),
        "modelversions": sum(len(v) for k, v in mvs.items() if k not in uids),
    }
    return {
        "trainingruns": len(uids),
        "jobs": sum(len(v) for v in jobs.values()),
        "runs": sum(len(v) for v in runs.values()),
        "versions": sum(len(v) for v in versions.values()),
        "modelversions": sum(len(v) for v in mvs.values()),
        "duplicates": sum(1 for c in problems.values() if any(n > 1 for n in c.values())),
        "missing": sum(1 for c in problems.values() if any(n < 1 for n in c.values())),
        "problems": problems,
        "strays": strays,
        "run_states": dict(Counter(r.info.status for rs in runs.values() for r in rs)),
    }
