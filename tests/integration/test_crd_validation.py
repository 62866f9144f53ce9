"""The CRDs against the real apiserver: examples accepted, bad objects rejected with our messages.

Every rejection is asserted on the apiserver's error text, so a CEL rule that does not compile,
exceeds the cost budget, or never fires makes a test fail.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator.api.common import DURATION_RE, MODEL_URI_RE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / "iris" / name).read_text())


TR = _load("trainingrun.yaml")
MV = _load("modelversion.yaml")
MD = _load("modeldeployment.yaml")

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """Set ``spec.a.b[0].c`` (creating dicts) to ``value``."""

    def mutate(obj: dict[str, Any]) -> None:
        node: Any = obj
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()


def _all(*mutations: Mutation) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        for m in mutations:
            m(obj)

    return mutate


# (id, base object, mutation, expected text in the apiserver's error)
BAD_OBJECTS: list[tuple[str, dict[str, Any], Mutation, str]] = [
    ("missing-spec", TR, _set("spec", _DELETE), "spec: Required value"),
    ("tr-missing-model", TR, _set("spec.model", _DELETE), "spec.model: Required value"),
    (
        "tr-wrong-type",
        TR,
        _set("spec.backoffLimit", "three"),
        "spec.backoffLimit in body must be of type integer",
    ),
    ("tr-unknown-field", TR, _set("spec.imag", "x"), 'unknown field "spec.imag"'),
    ("tr-bad-model-name", TR, _set("spec.model", "iris model"), "must be a model name"),
    (
        "tr-env-value-and-valueFrom",
        TR,
        _set("spec.env.0.value", "1.2.3.4"),
        "value and valueFrom are mutually exclusive",
    ),
    (
        "tr-negative-backoff",
        TR,
        _set("spec.backoffLimit", -1),
        "spec.backoffLimit in body should be greater than or equal to 0",
    ),
    (
        "md-weights-not-100",
        MD,
        _set("spec.variants.1.weight", 20),
        "the weights of all variants must sum to 100",
    ),
    (
        "md-weight-over-100",
        MD,
        _all(_set("spec.variants.0.weight", 110), _set("spec.variants.1.weight", -10)),
        "weight must be between 0 and 100",
    ),
    (
        "md-duplicate-variants",
        MD,
        _set("spec.variants.1.name", "champion"),
        "variant names must be unique",
    ),
    (
        "md-malformed-model-uri",
        MD,
        _set("spec.variants.0.modelUri", "models:/iris"),
        "must be a model URI: models:/<name>@<alias>",
    ),
    (
        "md-uri-of-other-model",
        MD,
        _set("spec.variants.0.modelUri", "models:/wine@champion"),
        "every models:/ URI of a variant must refer to spec.model",
    ),
    (
        "md-negative-replicas",
        MD,
        _set("spec.variants.0.replicas", -1),
        "replicas must not be negative",
    ),
    (
        "md-variant-named-like-a-canary",
        MD,
        _set("spec.variants.0.name", "champion-canary"),
        "a variant must not be called router or end in -canary",
    ),
    (
        "md-variant-named-router",
        MD,
        _set("spec.variants.0.name", "router"),
        "a variant must not be called router or end in -canary",
    ),
    (
        "md-variant-name-not-dns",
        MD,
        _set("spec.variants.0.name", "Champion_1"),
        "must be a DNS label",
    ),
    ("md-no-variants", MD, _set("spec.variants", []), "should have at least 1 items"),
    (
        "md-bad-duration",
        MD,
        _set("spec.retrain.cooldown", "1 hour"),
        "must be a duration such as 30s",
    ),
    (
        "md-bad-pause",
        MD,
        _set("spec.rollout.steps.0.pause", "90"),
        "spec.rollout.steps[0].pause: Invalid value",
    ),
    (
        "md-canary-without-steps",
        MD,
        _set("spec.rollout.steps", _DELETE),
        "strategy Canary needs at least one step",
    ),
    (
        "md-steps-decreasing",
        MD,
        _set("spec.rollout.steps.1.weight", 5),
        "canary step weights must not decrease",
    ),
    (
        "md-bad-analysis-condition",
        MD,
        _set("spec.rollout.analysis.metrics.0.successCondition", "errors < 5%"),
        "must compare the query result with a number",
    ),
    (
        "md-mirror-unknown-variant",
        MD,
        _set("spec.traffic.mirror", {"variant": "shadow", "percent": 10}),
        "traffic.mirror.variant must name one of the variants",
    ),
    ("md-bad-router", MD, _set("spec.traffic.router", "nginx"), 'Unsupported value: "nginx"'),
    (
        "md-retrain-other-model",
        MD,
        _set("spec.retrain.template.model", "wine"),
        "retrain.template.model must equal spec.model",
    ),
    (
        "md-autoscaling-min-gt-max",
        MD,
        _set(
            "spec.runtime.autoscaling",
            {"minReplicas": 3, "maxReplicas": 2, "targetCPUUtilizationPercentage": 70},
        ),
        "minReplicas must not be greater than maxReplicas",
    ),
    (
        "mv-version-and-source",
        MV,
        _set("spec.source", "runs:/0123abcd/model"),
        "exactly one of version and source must be set",
    ),
    (
        "mv-neither-version-nor-source",
        MV,
        _set("spec.version", _DELETE),
        "exactly one of version and source must be set",
    ),
    (
        "mv-malformed-source",
        MV,
        _all(_set("spec.version", _DELETE), _set("spec.source", "runs:/abc")),
        "must be runs:/<run-id>/<path>",
    ),
    ("mv-version-not-number", MV, _set("spec.version", "v1"), "must be a registry version number"),
    ("mv-reserved-alias", MV, _set("spec.promote.alias", "latest"), "reserved by MLflow"),
    ("mv-bad-mode", MV, _set("spec.promote.mode", "Sometimes"), 'Unsupported value: "Sometimes"'),
    (
        "mv-min-gt-max",
        MV,
        _set("spec.validation.metrics.0.max", 0.5),
        "min must not be greater than max",
    ),
    (
        "mv-gate-without-bounds",
        MV,
        _set("spec.validation.metrics.0", {"name": "accuracy"}),
        "a metric gate needs at least one of min, max and compareTo",
    ),
    (
        "mv-duplicate-gates",
        MV,
        _set(
            "spec.validation.metrics",
            [{"name": "accuracy", "min": 0.9}, {"name": "accuracy", "max": 1}],
        ),
        "metric gate names must be unique",
    ),
]


def _create(kubectl: Any, namespace: str, obj: dict[str, Any], check: bool = True) -> Any:
    return kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=check)


@pytest.mark.usefixtures("crds")
def test_crds_are_established(kubectl: Any) -> None:
    out = kubectl("get", "crd", "-o", "name").stdout.split()
    for plural in ("trainingruns", "modelversions", "modeldeployments"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{plural}.mlops.dev" in out


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_example_is_accepted(kubectl: Any, namespace: str, path: Path) -> None:
    # Server-side dry run first (full validation, nothing stored), then for real.
    kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(path))
    out = kubectl("apply", "-n", namespace, "-f", str(path)).stdout
    assert "created" in out


@pytest.mark.usefixtures("crds")
def test_defaults_are_applied_by_the_apiserver(kubectl: Any, namespace: str) -> None:
    obj = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "minimal"},
        "spec": {"model": "iris", "variants": [{"name": "main", "modelUri": "models:/iris/1"}]},
    }
    _create(kubectl, namespace, obj)
    spec = json.loads(kubectl("get", "md", "minimal", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["variants"] == [
        {"name": "main", "modelUri": "models:/iris/1", "weight": 100, "replicas": 1}
    ]
    assert spec["runtime"] == {"port": 8080}
    assert spec["traffic"] == {"router": "builtin"}
    assert spec["rollout"] == {"strategy": "Immediate", "autoPromote": True, "autoRollback": True}


def test_bad_object_table_has_one_entry_per_rule() -> None:
    assert len(BAD_OBJECTS) >= 15
    assert len({entry[0] for entry in BAD_OBJECTS}) == len(BAD_OBJECTS)


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("base", "mutate", "expected"),
    [entry[1:] for entry in BAD_OBJECTS],
    ids=[entry[0] for entry in BAD_OBJECTS],
)
def test_bad_object_is_rejected(
    kubectl: Any, namespace: str, base: dict[str, Any], mutate: Mutation, expected: str
) -> None:
    obj = copy.deepcopy(base)
    mutate(obj)
    # The unmutated base is valid (test_example_is_accepted), so the rejection is this rule's.
    proc = _create(kubectl, namespace, obj, check=False)
    assert proc.returncode != 0, f"accepted: {json.dumps(obj.get('spec', obj))}"
    assert expected in proc.stderr, proc.stderr


def _patch(kubectl: Any, namespace: str, ref: str, patch: dict[str, Any], **kw: Any) -> Any:
    return kubectl(
        "patch",
        ref,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
        *kw.pop("extra", ()),
        **kw,
    )


@pytest.mark.usefixtures("crds")
def test_trainingrun_spec_is_immutable_once_started(kubectl: Any, namespace: str) -> None:
    _create(kubectl, namespace, TR)
    ref = "trainingrun/iris-train-1"
    # Not started yet: the spec may still be fixed.
    _patch(
        kubectl, namespace, ref, {"spec": {"image": "ghcr.io/mlops-operator/mlops-runtime:0.1.1"}}
    )

    # The operator marks the run started when it creates the MLflow run.
    _patch(
        kubectl,
        namespace,
        ref,
        {"status": {"phase": "Running", "startTime": "2024-05-01T12:00:00Z", "mlflowRunId": "abc"}},
        extra=("--subresource=status",),
    )
    for field, value, message in [
        ("image", "evil:latest", "spec.image: Invalid value"),
        ("params", {"n_estimators": "500"}, "spec.params: Invalid value"),
        ("command", ["python"], "spec.command: Invalid value"),
        ("args", None, "spec.args: Invalid value"),  # removing a field is a change too
        ("dataset", {"uri": "s3://other/data"}, "spec.dataset: Invalid value"),
        ("model", "wine", "spec.model: Invalid value"),
        ("experiment", "other", "spec.experiment: Invalid value"),
    ]:
        proc = _patch(kubectl, namespace, ref, {"spec": {field: value}}, check=False)
        assert proc.returncode != 0, field
        assert message in proc.stderr, proc.stderr
        assert f"{field} is immutable once the run has started" in proc.stderr, proc.stderr

    # Fields that do not change what was trained may still change.
    _patch(kubectl, namespace, ref, {"spec": {"register": {"enabled": False}}})
    spec = json.loads(kubectl("get", ref, "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["image"] == "ghcr.io/mlops-operator/mlops-runtime:0.1.1"
    assert spec["register"]["enabled"] is False


@pytest.mark.usefixtures("crds")
def test_modelversion_identity_is_immutable(kubectl: Any, namespace: str) -> None:
    _create(kubectl, namespace, MV)
    proc = _patch(kubectl, namespace, "mv/iris-v1", {"spec": {"model": "wine"}}, check=False)
    assert "model is immutable" in proc.stderr
    proc = _patch(kubectl, namespace, "mv/iris-v1", {"spec": {"version": "2"}}, check=False)
    assert "version is immutable" in proc.stderr
    # Approval is what users are meant to change.
    _patch(kubectl, namespace, "mv/iris-v1", {"spec": {"approved": True}})


FORMAT_CASES = [
    ("cooldown", "1h30m"),
    ("cooldown", "250ms"),
    ("cooldown", "1.5h"),
    ("cooldown", "0s"),
    ("cooldown", "5d"),
    ("cooldown", "1h 30m"),
    ("cooldown", "5M"),
    ("cooldown", "-5s"),
    ("modelUri", "models:/iris@champion"),
    ("modelUri", "models:/iris/12"),
    ("modelUri", "runs:/0123abcd/artifacts/model"),
    ("modelUri", "models:/iris/0"),
    ("modelUri", "models:/iris@"),
    ("modelUri", "s3://bucket/iris"),
    ("modelUri", "models:/iris@champion "),
]


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("field", "value"), FORMAT_CASES, ids=[f"{f}={v!r}" for f, v in FORMAT_CASES]
)
def test_cel_formats_agree_with_python(
    kubectl: Any, namespace: str, field: str, value: str
) -> None:
    """RE2 in the apiserver and Python's re give the same verdict on the shared regexes."""
    obj = copy.deepcopy(MD)
    if field == "cooldown":
        obj["spec"]["retrain"]["cooldown"] = value
        python_ok = re.fullmatch(DURATION_RE, value) is not None
    else:
        obj["spec"]["variants"][0]["modelUri"] = value
        python_ok = re.fullmatch(MODEL_URI_RE, value) is not None
    proc = kubectl(
        "create", "-n", namespace, "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False
    )
    assert (proc.returncode == 0) == python_ok, proc.stderr
