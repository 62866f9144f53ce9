"""The pydantic models as the operator's parse/validate layer: examples, defaults, invariants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlops_operator.api import (
    KINDS,
    Condition,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelVersionSpec,
    ModelVersionStatus,
    PrimaryMetric,
    TrainingRunSpec,
    TrainingRunStatus,
    VariantStatus,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SPEC_BY_KIND = {k.kind: k.spec for k in KINDS}


def _example_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("mlops.dev/"):
                docs.append((f"{path.relative_to(EXAMPLES)}:{doc['metadata']['name']}", doc))
    return docs


EXAMPLE_DOCS = _example_docs()


def test_there_are_examples_of_every_kind() -> None:
    kinds = {doc["kind"] for _, doc in EXAMPLE_DOCS}
    assert kinds == set(SPEC_BY_KIND)


@pytest.mark.parametrize(("name", "doc"), EXAMPLE_DOCS, ids=[n for n, _ in EXAMPLE_DOCS])
def test_every_example_parses_and_round_trips(name: str, doc: dict[str, Any]) -> None:
    spec_model = SPEC_BY_KIND[doc["kind"]]
    spec = spec_model.model_validate(doc["spec"])
    dumped = spec.to_k8s()
    # What the user wrote survives (defaults are added, nothing is renamed or dropped).
    _assert_subset(doc["spec"], dumped, name)
    assert spec_model.model_validate(dumped) == spec


def _assert_subset(small: Any, big: Any, where: str) -> None:
    if isinstance(small, dict):
        assert isinstance(big, dict), where
        for key, value in small.items():
            assert key in big, f"{where}.{key} dropped"
            _assert_subset(value, big[key], f"{where}.{key}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(small) == len(big), where
        for i, (a, b) in enumerate(zip(small, big, strict=True)):
            _assert_subset(a, b, f"{where}[{i}]")
    else:
        assert small == big, where


def test_defaults() -> None:
    md = ModelDeploymentSpec.model_validate(
        {"model": "iris", "variants": [{"name": "main", "modelUri": "models:/iris@champion"}]}
    )
    assert md.variants[0].weight == 100
    assert md.variants[0].replicas == 1
    assert md.runtime.port == 8080
    assert md.traffic.router == "builtin"
    assert md.rollout.strategy == "Immediate"
    assert md.rollout.auto_rollback is True

    mv = ModelVersionSpec.model_validate({"model": "iris", "version": "3"})
    assert (mv.promote.alias, mv.promote.mode, mv.promote.force) == ("champion", "Auto", False)
    assert mv.approved is False

    tr = TrainingRunSpec.model_validate({"model": "iris", "image": "img", "register": {}})
    assert tr.backoff_limit == 1
    assert tr.register is not None and tr.register.enabled is True
    assert tr.register.artifact_path == "model"


def test_populate_by_name_and_alias() -> None:
    by_name = ModelVersionSpec(model="iris", source="runs:/abc/model", approved=True)
    by_alias = ModelVersionSpec.model_validate(
        {"model": "iris", "source": "runs:/abc/model", "approved": True}
    )
    assert by_name == by_alias
    status = TrainingRunStatus(mlflow_run_id="abc", phase="Running")
    assert status.to_k8s() == {"mlflowRunId": "abc", "phase": "Running"}


def test_status_dump_is_camel_case_json_without_nones() -> None:
    status = ModelDeploymentStatus(
        phase="Ready",
        variants=[VariantStatus(name="champion", version="3", weight=90, ready_replicas=2)],
        champion="3",
        ready="2/2",
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="AllVariantsReady",
                last_transition_time="2024-05-01T12:00:00Z",
                observed_generation=4,
            )
        ],
        observed_generation=4,
    )
    assert status.to_k8s() == {
        "phase": "Ready",
        "variants": [{"name": "champion", "version": "3", "weight": 90, "readyReplicas": 2}],
        "champion": "3",
        "ready": "2/2",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllVariantsReady",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
                "observedGeneration": 4,
            }
        ],
        "observedGeneration": 4,
    }
    mv = ModelVersionStatus(primary_metric=PrimaryMetric(name="accuracy", value=0.97))
    assert mv.to_k8s() == {"primaryMetric": {"name": "accuracy", "value": 0.97}}


def _variants(*pairs: tuple[str, int]) -> dict[str, Any]:
    return {
        "model": "iris",
        "variants": [
            {"name": n, "modelUri": "models:/iris@champion", "weight": w} for n, w in pairs
        ],
    }


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (ModelDeploymentSpec, _variants(("a", 50), ("b", 40)), "must sum to 100"),
        (ModelDeploymentSpec, _variants(("a", 50), ("a", 50)), "variant names must be unique"),
        (ModelDeploymentSpec, _variants(("a", 150), ("b", -50)), "between 0 and 100"),
        (ModelDeploymentSpec, _variants(("Bad_Name", 100)), "must be a DNS label"),
        (
            ModelDeploymentSpec,
            {"model": "iris", "variants": [{"name": "a", "modelUri": "s3://b/m"}]},
            "must be a model URI",
        ),
        (
            ModelDeploymentSpec,
            {
                "model": "iris",
                "variants": [{"name": "a", "modelUri": "models:/iris@x", "replicas": -1}],
            },
            "replicas must not be negative",
        ),
        (
            ModelDeploymentSpec,
            {**_variants(("a", 100)), "traffic": {"mirror": {"variant": "b"}}},
            "mirror.variant must name one of the variants",
        ),
        (
            ModelDeploymentSpec,
            {**_variants(("a", 100)), "rollout": {"strategy": "Canary"}},
            "Canary needs at least one step",
        ),
        (
            ModelDeploymentSpec,
            {
                **_variants(("a", 100)),
                "retrain": {
                    "alerts": ["X"],
                    "cooldown": "1 hour",
                    "template": {"model": "iris", "image": "i"},
                },
            },
            "must be a duration",
        ),
        (
            ModelDeploymentSpec,
            {
                **_variants(("a", 100)),
                "retrain": {"alerts": ["X"], "template": {"model": "other", "image": "i"}},
            },
            "retrain.template.model must equal spec.model",
        ),
        (ModelVersionSpec, {"model": "iris", "version": "1", "source": "runs:/a/m"}, "exactly one"),
        (ModelVersionSpec, {"model": "iris"}, "exactly one of version and source"),
        (ModelVersionSpec, {"model": "iris", "source": "runs:/abc"}, "must be runs:/"),
        (ModelVersionSpec, {"model": "iris", "version": "v1"}, "registry version number"),
        (
            ModelVersionSpec,
            {"model": "iris", "version": "1", "promote": {"alias": "latest"}},
            "reserved by MLflow",
        ),
        (
            ModelVersionSpec,
            {
                "model": "iris",
                "version": "1",
                "validation": {"metrics": [{"name": "a", "min": 2, "max": 1}]},
            },
            "min must not be greater than max",
        ),
        (
            ModelVersionSpec,
            {"model": "iris", "version": "1", "validation": {"metrics": [{"name": "a"}]}},
            "at least one of min, max and compareTo",
        ),
        (TrainingRunSpec, {"model": "iris model", "image": "i"}, "must be a model name"),
        (TrainingRunSpec, {"image": "i"}, "Field required"),
        (TrainingRunSpec, {"model": "iris", "image": "i", "imag": "j"}, "Extra inputs"),
    ],
)
def test_invalid_specs_are_rejected_in_python(
    model: type[Any], data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        model.model_validate(data)
