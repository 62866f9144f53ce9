"""Helpers of the ModelVersion integration tests: MLflow registry access and MV resources."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_localstack.cluster import poll

GROUP_PLURAL = "modelversions.mlops.dev"


def operator_process_class(config: pytest.Config) -> type:
    """``OperatorProcess`` from the root ``tests/conftest.py`` (loaded by pytest as a plugin)."""
    for plugin in config.pluginmanager.get_plugins():
        cls = getattr(plugin, "OperatorProcess", None)
        if isinstance(cls, type):
            return cls
    raise RuntimeError("tests/conftest.py OperatorProcess not found")


def tiny_model() -> Any:
    """A tiny fitted sklearn classifier (iris, 3 classes)."""
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True, as_frame=True)
    return DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, y)


@dataclass
class Registry:
    """The MLflow server seen from the tests: make runs/versions, read aliases and tags."""

    tracking_uri: str
    _client: Any = field(default=None, init=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def run(self, metrics: dict[str, float], log_model: bool = False) -> str:
        """A finished run with ``metrics`` (and a tiny model under ``model``); its id."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        # an explicit experiment: the fluent API's active experiment is process-wide and may
        # still point at another store when an in-process trainer test ran first
        with mlflow.start_run(experiment_id="0") as run:
            if metrics:
                mlflow.log_metrics(metrics)
            if log_model:
                mlflow.sklearn.log_model(
                    tiny_model(), name="model", pip_requirements=["scikit-learn"],
                    serialization_format="pickle",
                )
        return str(run.info.run_id)

    def version(self, model: str, metrics: dict[str, float], log_model: bool = False) -> str:
        """Register a new version of ``model`` from a fresh run with ``metrics``."""
        from mlflow.exceptions import MlflowException

        run_id = self.run(metrics, log_model=log_model)
        try:
            self.client.create_registered_model(model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if log_model:
            import mlflow

            return str(mlflow.register_model(f"runs:/{run_id}/model", model).version)
        mv = self.client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
        return str(mv.version)

    def aliases(self, model: str) -> dict[str, str]:
        return dict(self.client.get_registered_model(model).aliases)

    def tags(self, model: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(model, version).tags)

    def run_id(self, model: str, version: str) -> str:
        return str(self.client.get_model_version(model, version).run_id)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model, alias, version)


@dataclass
class MV:
    """ModelVersion resources of one namespace: apply, read, wait."""

    kubectl: Callable[..., Any]
    namespace: str
    operator: Any = None

    def apply(self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> None:
        obj = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelVersion",
               "metadata": {"name": name, **({"labels": labels} if labels else {})},
               "spec": spec}
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(obj))

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "-n", self.namespace, GROUP_PLURAL, name, "--type=merge",
                     "-p", json.dumps({"spec": spec}))

    def get(self, name: str) -> dict[str, Any]:
        out = self.kubectl("get", "-n", self.namespace, GROUP_PLURAL, name, "-o", "json")
        return dict(json.loads(out.stdout))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def condition(self, name: str, ctype: str) -> dict[str, Any]:
        for cond in self.status(name).get("conditions") or []:
            if cond["type"] == ctype:
                return dict(cond)
        return {}

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "events", "-n", self.namespace, "-o", "json",
                           f"--field-selector=involvedObject.name={name}")
        return list(json.loads(out.stdout)["items"])

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        def alive() -> str | None:
            if self.operator is not None and not self.operator.alive():
                return f"operator died:\n{self.operator.logs()[-3000:]}"
            return None

        return poll(what, check, timeout=timeout, interval=0.3, alive=alive)

    def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until ``status.phase`` is one of ``phases``; return the status."""
        def check() -> dict[str, Any] | None:
            st = self.status(name)
            return st if st.get("phase") in phases else None

        try:
            return dict(self.wait(f"{name} phase in {phases}", check, timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {json.dumps(self.status(name), indent=1)}"
                                 f"{self._operator_lines()}") from None

    def _operator_lines(self, last: int = 40) -> str:
        """The shared operator's last log lines about this namespace (for a failure message)."""
        if self.operator is None:
            return ""
        lines = [ln for ln in self.operator.logs().splitlines() if self.namespace in ln]
        return "\noperator log, this namespace:\n" + "\n".join(lines[-last:] or ["(none)"])

    def wait_event(self, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
        return dict(self.wait(
            f"Event {reason} on {name}",
            lambda: next((e for e in self.events(name) if e.get("reason") == reason), None),
            timeout,
        ))


def stage_count(operator: Any, stage: str, result: str) -> float:
    """``mlops_stage_total{stage, result}`` on the operator's /metrics now (0 before the first)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == "mlops_stage_total" and sample.labels == {
                    "stage": stage, "result": result}:
                return sample.value
    return 0.0


def checks_by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status.get("checks") or []}


REPO = Path(__file__).resolve().parents[3]

