"""TrainingRun (``tr``): one training job, tracked as one MLflow run.

The operator creates the MLflow run *first* (logging ``params`` and the dataset), records its id
in ``status.mlflowRunId`` and ``status.startTime``, and then creates a Job that receives
``MLFLOW_RUN_ID``; so a retried Job never duplicates a run. When the Job succeeds and
``spec.register`` is set, the operator creates a ModelVersion from ``runs:/<id>/model``.

**Immutability.** What a run trains on and with (``model``, ``experiment``, ``image``,
``command``, ``args``, ``params``, ``dataset``) is fixed once the run has started — the MLflow
run has already recorded it. "Started" means ``status.startTime`` is set, which the operator
does together with creating the MLflow run. This is expressed as transition rules on the
object's root (the only node where CEL sees both spec and status); before the run starts the
spec may still be edited. To train again, create a new TrainingRun (as with a Job).
"""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

from pydantic import Field

from .common import (
    AGE_COLUMN,
    ApiModel,
    CelRule,
    Conditions,
    DnsSubdomain,
    EnvFromList,
    EnvList,
    KindInfo,
    MetricName,
    ModelName,
    PrimaryMetric,
    PrinterColumn,
    ResourceRequirements,
    ShortStr,
    Str,
    StringList,
    StringMap,
    Timestamp,
    Tolerations,
)
from .modelversion import PromoteSpec, ValidationSpec


class DvcSource(ApiModel):
    """Where DVC finds the dataset: ``dvc get <repo> <path> --rev <rev>``."""

    repo: Str = Field(description="Git URL (or local path) of the DVC repository.")
    path: Str = Field(description="Path of the data file or directory in the repository.")
    rev: ShortStr | None = Field(
        default=None, description="Git revision (commit, tag, branch); default the HEAD."
    )


class DatasetSpec(ApiModel):
    """The training data: a URI and a version, optionally resolved through DVC."""

    uri: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="Dataset URI passed to the trainer as DATASET_URI (s3://, file://, ...)."
    )
    version: ShortStr | None = Field(
        default=None,
        description="Dataset version label, logged to MLflow and passed as DATASET_VERSION.",
    )
    dvc: DvcSource | None = Field(
        default=None,
        description="Fetch the dataset with DVC; the operator records the content digest.",
    )


class RegisterSpec(ApiModel):
    """Register the trained model as a ModelVersion when the run succeeds."""

    enabled: bool = Field(default=True, description="Whether to register the trained model.")
    model_name: ModelName | None = Field(
        default=None, description="Registered model name; defaults to spec.model."
    )
    artifact_path: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        default="model", description="Artifact path of the model in the run: runs:/<id>/<path>."
    )
    validation: ValidationSpec | None = Field(
        default=None, description="Gates copied into the ModelVersion."
    )
    promote: PromoteSpec | None = Field(
        default=None, description="Promotion copied into the ModelVersion."
    )


# ``register`` is also ABCMeta.register on the class; the field still works on instances.
warnings.filterwarnings(
    "ignore", message='Field name "register" in "TrainingRunSpec"', category=UserWarning
)


class TrainingRunSpec(ApiModel):
    """Desired state of a TrainingRun."""

    model: ModelName = Field(description="Model name: the registered model and the label.")
    experiment: ShortStr | None = Field(
        default=None, description="MLflow experiment name; defaults to spec.model."
    )
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None,
        description="Container image that trains the model (the runtime image's `train`); "
        "defaults to the operator's MLOPS_DEFAULT_TRAINING_IMAGE.",
    )
    command: StringList | None = Field(default=None, description="Entrypoint override.")
    args: StringList | None = Field(default=None, description="Arguments to the entrypoint.")
    params: StringMap | None = Field(
        default=None,
        description="Hyperparameters, logged to MLflow and passed as PARAM_<NAME> and a "
        "JSON MLOPS_PARAMS env var.",
    )
    dataset: DatasetSpec | None = Field(default=None, description="The training data.")
    primary_metric: MetricName | None = Field(
        default=None,
        description="Metric shown by kubectl get (METRIC/VALUE); defaults to the first "
        "register.validation metric.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU/memory/GPU requests and limits of the training pod."
    )
    env: EnvList | None = Field(default=None, description="Extra environment variables.")
    env_from: EnvFromList | None = Field(
        default=None, description="Environment variables from ConfigMaps and Secrets."
    )
    service_account_name: DnsSubdomain | None = Field(
        default=None, description="ServiceAccount of the training pod."
    )
    node_selector: StringMap | None = Field(
        default=None, description="Node labels the training pod must match."
    )
    tolerations: Tolerations | None = Field(default=None, description="Taints to tolerate.")
    backoff_limit: int = Field(
        default=1, ge=0, le=20, description="Job retries before the run fails."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the run when it runs longer than this."
    )
    register: RegisterSpec | None = Field(
        default=None,
        description="Create a ModelVersion from the trained model (with gates and promotion).",
    )


TrainingRunPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class DatasetStatus(ApiModel):
    """The dataset as actually used."""

    uri: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="Resolved dataset URI."
    )
    version: ShortStr | None = Field(default=None, description="Dataset version label.")
    digest: ShortStr | None = Field(
        default=None, description="Content digest (e.g. DVC md5 or sha256)."
    )


class ModelVersionRef(ApiModel):
    """The ModelVersion registered from this run."""

    version: ShortStr | None = Field(default=None, description="Registry version.")
    name: ShortStr | None = Field(default=None, description="ModelVersion resource name.")


class TrainingRunStatus(ApiModel):
    """Observed state of a TrainingRun, written by the operator."""

    phase: TrainingRunPhase | None = Field(
        default=None, description="Pending, Running, Succeeded or Failed."
    )
    job_name: ShortStr | None = Field(default=None, description="Name of the training Job.")
    mlflow_run_id: ShortStr | None = Field(default=None, description="MLflow run id (RUN).")
    metrics: Annotated[dict[str, float], Field(json_schema_extra={"maxProperties": 256})] | None = (
        Field(default=None, description="Final metrics logged by the run.")
    )
    primary_metric: PrimaryMetric | None = Field(
        default=None, description="The metric shown by kubectl get (METRIC/VALUE)."
    )
    dataset: DatasetStatus | None = Field(default=None, description="Dataset actually used.")
    model_version: ModelVersionRef | None = Field(
        default=None, description="The registered ModelVersion, when register is set."
    )
    start_time: Timestamp | None = Field(
        default=None,
        description="When the MLflow run was created; from then on the spec is immutable.",
    )
    completion_time: Timestamp | None = Field(default=None, description="When the run ended.")
    message: Str | None = Field(default=None, description="Summary of the last transition.")
    conditions: Conditions | None = Field(default=None, description="Ready and friends.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation last reconciled."
    )


#: The spec fields that are fixed once the run has started, and whether they are required.
IMMUTABLE_ONCE_STARTED: tuple[tuple[str, bool], ...] = (
    ("model", True),
    ("experiment", False),
    ("image", False),
    ("command", False),
    ("args", False),
    ("params", False),
    ("dataset", False),
)

STARTED = "(has(oldSelf.status) && has(oldSelf.status.startTime))"


def _immutable_rule(field: str, required: bool) -> CelRule:
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    same = (
        f"{new} == {old}"
        if required
        else f"has({new}) == has({old}) && (!has({new}) || {new} == {old})"
    )
    return CelRule(
        f"!{STARTED} || ({same})",
        f"{field} is immutable once the run has started",
        field_path=f".spec.{field}",
    )


TRAINING_RUN = KindInfo(
    kind="TrainingRun",
    plural="trainingruns",
    singular="trainingrun",
    short_names=("tr",),
    description="A training job tracked as one MLflow run; optionally registers the model.",
    spec=TrainingRunSpec,
    status=TrainingRunStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", description="Model name."),
        PrinterColumn("Phase", ".status.phase", description="Lifecycle phase."),
        PrinterColumn("Run", ".status.mlflowRunId", description="MLflow run id."),
        PrinterColumn("Metric", ".status.primaryMetric.name", description="Primary metric."),
        PrinterColumn("Value", ".status.primaryMetric.value", "number", "Primary metric value."),
        PrinterColumn(
            "Version",
            ".status.modelVersion.version",
            description="Registered model version.",
            priority=1,
        ),
        PrinterColumn("Job", ".status.jobName", description="Training Job.", priority=1),
        AGE_COLUMN,
    ),
    root_rules=tuple(_immutable_rule(f, r) for f, r in IMMUTABLE_ONCE_STARTED),
)
