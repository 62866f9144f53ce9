"""ModelVersion (``mv``): one version of a registered model, its validation gates and promotion.

A ModelVersion either points at an existing registry version (``spec.version``) or registers
one from ``spec.source`` (``runs:/<id>/model``, another version, or an artifact URI) on its
first reconcile. The operator then runs the validation gates and, when they pass, moves the
MLflow alias (``champion`` by default) to it — at once (``mode: Auto``) or once a human sets
``spec.approved: true`` (``mode: Manual``).

:class:`ValidationSpec` and :class:`PromoteSpec` are also used by ``TrainingRun.spec.register``
so that a TrainingRun can copy its gates verbatim into the ModelVersion it creates.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .common import (
    AGE_COLUMN,
    AliasName,
    ApiModel,
    CelRule,
    Conditions,
    KindInfo,
    LongStr,
    MetricName,
    ModelName,
    PrimaryMetric,
    PrinterColumn,
    RegistryVersion,
    ShortStr,
    SourceUri,
    Str,
    StringList,
    StringMap,
    Timestamp,
    default_of,
    unique,
)

Direction = Literal["HigherIsBetter", "LowerIsBetter"]


class MetricGate(ApiModel):
    """A gate on one metric logged by the run: absolute bounds and/or an improvement over the
    version that currently holds an alias."""

    cel_rules = (
        CelRule(
            "has(self.min) || has(self.max) || has(self.compareTo)",
            "a metric gate needs at least one of min, max and compareTo",
        ),
        CelRule(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "min must not be greater than max",
        ),
    )

    name: MetricName = Field(description="Metric name as logged to MLflow, e.g. accuracy.")
    min: float | None = Field(default=None, description="The metric must be at least this.")
    max: float | None = Field(default=None, description="The metric must be at most this.")
    compare_to: AliasName | None = Field(
        default=None,
        description=(
            "Compare with the version holding this alias (usually champion): the candidate "
            "must beat it by minImprovement in the given direction. Passes when no version "
            "holds the alias yet."
        ),
    )
    min_improvement: float = Field(
        default=0.0,
        description="Required improvement over compareTo (absolute, in the metric's unit).",
    )
    direction: Direction = Field(
        default="HigherIsBetter",
        description="Whether higher (accuracy) or lower (loss, latency) values are better.",
    )

    @model_validator(mode="after")
    def _check(self) -> MetricGate:
        if self.min is None and self.max is None and self.compare_to is None:
            raise ValueError("a metric gate needs at least one of min, max and compareTo")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        return self


class SliceGate(ApiModel):
    """A fairness/robustness gate over a family of per-slice metrics (e.g. the accuracy of each
    class or each demographic group): a floor every slice must reach and/or a maximum gap
    between the best and the worst slice."""

    cel_rules = (
        CelRule(
            "has(self.prefix) != has(self.metrics)",
            "exactly one of prefix and metrics must be set",
        ),
        CelRule(
            "has(self.floor) || has(self.maxGap)",
            "a slice gate needs floor, maxGap or both",
        ),
    )

    name: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        description="Name of the check as reported in status.checks."
    )
    prefix: MetricName | None = Field(
        default=None,
        description="Every logged metric starting with this prefix is a slice, "
        "e.g. accuracy_class_.",
    )
    metrics: Annotated[list[MetricName], Field(max_length=64)] | None = Field(
        default=None, description="The slice metrics, listed explicitly."
    )
    floor: float | None = Field(default=None, description="Every slice must be at least this.")
    max_gap: float | None = Field(
        default=None, ge=0, description="Best slice minus worst slice must be at most this."
    )


class ValidationJob(ApiModel):
    """A Job that computes extra metrics for the candidate (e.g. on a holdout set) before the
    gates are evaluated. It receives MODEL_URI and MLFLOW_RUN_ID and logs metrics to that run."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Container image of the validation job."
    )
    command: StringList | None = Field(default=None, description="Entrypoint override.")
    args: StringList | None = Field(default=None, description="Arguments.")
    dataset: Str | None = Field(
        default=None, description="URI of the evaluation dataset, passed as DATASET_URI."
    )


class ValidationSpec(ApiModel):
    """Validation gates a version must pass before it is promoted."""

    cel_rules = (
        CelRule(
            "!has(self.metrics) || " + unique("self.metrics", "name"),
            "metric gate names must be unique",
        ),
        CelRule(
            "!has(self.slices) || " + unique("self.slices", "name"),
            "slice gate names must be unique",
        ),
    )

    metrics: Annotated[list[MetricGate], Field(max_length=32)] | None = Field(
        default=None,
        description="Metric gates; the first one is the primary metric shown by kubectl get.",
    )
    slices: Annotated[list[SliceGate], Field(max_length=16)] | None = Field(
        default=None, description="Per-slice floors and maximum gaps."
    )
    job: ValidationJob | None = Field(
        default=None, description="Optional Job that computes extra metrics before gating."
    )

    @model_validator(mode="after")
    def _unique(self) -> ValidationSpec:
        for label, items in (("metric", self.metrics), ("slice", self.slices)):
            names = [i.name for i in items or []]
            if len(names) != len(set(names)):
                raise ValueError(f"{label} gate names must be unique")
        return self


class PromoteSpec(ApiModel):
    """How a validated version is promoted: which alias moves to it, and when."""

    alias: AliasName = Field(default="champion", description="MLflow alias to move to the version.")
    mode: Literal["Auto", "Manual"] = Field(
        default="Auto",
        description="Auto promotes as soon as the gates pass; Manual waits for "
        "spec.approved: true (phase AwaitingApproval).",
    )
    force: bool = Field(
        default=False,
        description="Skip the comparison gates (compareTo) and promote anyway: a rollback to "
        "an older version.",
    )


class ModelVersionSpec(ApiModel):
    """Desired state of a ModelVersion."""

    cel_rules = (
        CelRule(
            "has(self.version) != has(self.source)",
            "exactly one of version and source must be set",
        ),
        CelRule("self.model == oldSelf.model", "model is immutable", field_path=".model"),
        CelRule(
            "has(self.version) == has(oldSelf.version) && "
            "(!has(self.version) || self.version == oldSelf.version)",
            "version is immutable",
            field_path=".version",
        ),
        CelRule(
            "has(self.source) == has(oldSelf.source) && "
            "(!has(self.source) || self.source == oldSelf.source)",
            "source is immutable",
            field_path=".source",
        ),
    )

    model: ModelName = Field(description="Registered model name in MLflow, e.g. iris.")
    version: RegistryVersion | None = Field(
        default=None,
        description="An existing registry version to validate and promote. Exactly one of "
        "version and source.",
    )
    source: SourceUri | None = Field(
        default=None,
        description="Register a new version from this URI on first reconcile: "
        "runs:/<run-id>/model, models:/<name>/<version> or an artifact URI. Exactly one of "
        "version and source.",
    )
    description: LongStr | None = Field(
        default=None, description="Description set on the registry version."
    )
    tags: StringMap | None = Field(
        default=None, description="Tags set on the registry version (lineage tags are added)."
    )
    validation: ValidationSpec | None = Field(
        default=None, description="Gates to pass before promotion; none means always valid."
    )
    promote: PromoteSpec = Field(
        default_factory=PromoteSpec,
        description="Promotion: alias, Auto or Manual, force.",
        json_schema_extra=default_of(PromoteSpec),
    )
    approved: bool = Field(
        default=False,
        description="Approval for promote.mode Manual: set to true to promote a version that "
        "is AwaitingApproval.",
    )

    @model_validator(mode="after")
    def _version_xor_source(self) -> ModelVersionSpec:
        if (self.version is None) == (self.source is None):
            raise ValueError("exactly one of version and source must be set")
        return self


ModelVersionPhase = Literal[
    "Pending",
    "Validating",
    "AwaitingApproval",
    "Rejected",
    "Validated",
    "Promoted",
    "Failed",
]


class Check(ApiModel):
    """Result of one validation gate."""

    name: Annotated[str, Field(max_length=300)] = Field(
        description="Gate name: the metric name, '<metric> vs <alias>' or the slice gate name."
    )
    value: float | None = Field(default=None, description="Measured value.")
    threshold: float | None = Field(default=None, description="The bound it was compared with.")
    passed: bool = Field(description="Whether the gate passed.")
    message: Str | None = Field(default=None, description="Human-readable explanation.")


class ModelVersionStatus(ApiModel):
    """Observed state of a ModelVersion, written by the operator."""

    phase: ModelVersionPhase | None = Field(
        default=None,
        description="Pending, Validating, AwaitingApproval, Rejected, Validated, Promoted or "
        "Failed.",
    )
    version: ShortStr | None = Field(
        default=None, description="Registry version (given or registered from source)."
    )
    run_id: ShortStr | None = Field(default=None, description="MLflow run that produced it.")
    source: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="Artifact source of the registered version."
    )
    checks: Annotated[list[Check], Field(max_length=64)] | None = Field(
        default=None, description="Result of every gate."
    )
    primary_metric: PrimaryMetric | None = Field(
        default=None, description="First metric gate and its value (METRIC/VALUE columns)."
    )
    alias: ShortStr | None = Field(
        default=None, description="Alias this version holds after promotion (ALIAS column)."
    )
    previous_champion: ShortStr | None = Field(
        default=None,
        description="Version that held the alias before promotion, for rollback.",
    )
    promoted_time: Timestamp | None = Field(default=None, description="When it was promoted.")
    message: Str | None = Field(default=None, description="Summary of the last transition.")
    validation_job: ShortStr | None = Field(
        default=None,
        description="The validation Job of the current spec (named by a hash of the model "
        "version and spec.validation.job; Jobs of a superseded spec are deleted).",
    )
    validated_generation: int | None = Field(
        default=None, description="metadata.generation whose gates produced status.checks."
    )
    conditions: Conditions | None = Field(default=None, description="Ready and friends.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation last reconciled."
    )


MODEL_VERSION = KindInfo(
    kind="ModelVersion",
    plural="modelversions",
    singular="modelversion",
    short_names=("mv",),
    description="A version of a registered MLflow model: validation gates and promotion to an "
    "alias.",
    spec=ModelVersionSpec,
    status=ModelVersionStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", description="Registered model name."),
        PrinterColumn("Version", ".status.version", description="Registry version."),
        PrinterColumn("Phase", ".status.phase", description="Lifecycle phase."),
        PrinterColumn("Alias", ".status.alias", description="Alias held after promotion."),
        PrinterColumn("Metric", ".status.primaryMetric.name", description="Primary metric."),
        PrinterColumn("Value", ".status.primaryMetric.value", "number", "Primary metric value."),
        PrinterColumn(
            "Previous",
            ".status.previousChampion",
            description="Version that held the alias before.",
            priority=1,
        ),
        AGE_COLUMN,
    ),
)
