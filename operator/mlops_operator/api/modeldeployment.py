"""ModelDeployment (``md``): serve a model as weighted variants, roll out, retrain on alerts.

Each variant serves one ``modelUri``; aliases (``models:/iris@champion``) are resolved to a
pinned registry version recorded in ``status.variants[].version``, so every replica of a variant
serves the same version and the manifest in Git never drifts. ``traffic`` says how requests are
split (the builtin router, Gateway API weights, or plain Service endpoints), ``rollout`` how a
newly resolved version reaches its weight (at once, or canary steps gated by Prometheus
analysis), and ``retrain`` which alerts start a new TrainingRun from a template.

Printer columns read status fields the operator fills: ``status.champion`` and
``status.challenger`` (pinned versions of the first and second variant, e.g. ``"3"``),
``status.traffic`` (``"champion=90 challenger=10"``), ``status.ready`` (``"2/2"`` ready over
desired replicas) and ``status.phase``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .common import (
    AGE_COLUMN,
    AnalysisCondition,
    ApiModel,
    CelRule,
    Conditions,
    DnsLabel,
    Duration,
    EnvFromList,
    EnvList,
    HeaderName,
    HttpUrl,
    KindInfo,
    LongStr,
    ModelName,
    ModelUri,
    PrinterColumn,
    ResourceRequirements,
    ShortStr,
    Str,
    Timestamp,
    default_of,
    unique,
    with_cel,
)
from .trainingrun import TrainingRunSpec

MAX_VARIANTS = 8
#: The model server's gRPC port (container port and Service port ``grpc``); the HTTP port
#: ``runtime.port`` must differ from it.
GRPC_PORT = 8081
GRPC_PORT_CLASH = (
    f"port {GRPC_PORT} is the model server's gRPC port (container and Service port grpc); "
    "choose another HTTP port"
)


class Autoscaling(ApiModel):
    """Horizontal autoscaling of every variant (an HPA per variant)."""

    cel_rules = (
        CelRule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not be greater than maxReplicas",
        ),
        CelRule(
            "has(self.targetCPUUtilizationPercentage) || has(self.targetRequestsPerSecond)",
            "set targetCPUUtilizationPercentage or targetRequestsPerSecond",
        ),
    )

    min_replicas: int = Field(
        default=1, ge=1, le=1000,
        description="Lower bound (at least 1: scaling to zero needs a feature gate).",
    )
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound.")
    target_cpu_utilization_percentage: int | None = Field(
        default=None,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Target average CPU utilization of the requested CPU, in percent.",
    )
    target_requests_per_second: float | None = Field(
        default=None, gt=0, description="Target requests per second per replica."
    )


class RuntimeSpec(ApiModel):
    """The serving runtime shared by all variants."""

    image: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None,
        description="Serving image; defaults to the operator's runtime image setting.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Requests and limits of each serving pod."
    )
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description=f"HTTP port of the server (and of the router); not {GRPC_PORT}, the gRPC port.",
        json_schema_extra=with_cel(CelRule(f"self != {GRPC_PORT}", GRPC_PORT_CLASH)),
    )
    env: EnvList | None = Field(default=None, description="Extra environment variables.")
    env_from: EnvFromList | None = Field(
        default=None, description="Environment variables from ConfigMaps and Secrets."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Autoscale variants instead of using variants[].replicas."
    )


class Variant(ApiModel):
    """One model served side by side with the others, with its share of the traffic."""

    cel_rules = (
        CelRule("self.weight >= 0 && self.weight <= 100", "weight must be between 0 and 100"),
        CelRule("self.replicas >= 0", "replicas must not be negative"),
        CelRule(
            "self.name != 'router' && !self.name.endsWith('-canary')",
            "a variant must not be called router or end in -canary: the router's and the "
            "canaries' objects use those names",
        ),
    )

    name: DnsLabel = Field(
        description="Variant name, a DNS label (e.g. champion, challenger); names the "
        "Deployment <deployment>-<variant> and the label mlops.dev/variant."
    )
    model_uri: ModelUri = Field(
        description="What to serve: models:/<name>@<alias> (resolved to a pinned version), "
        "models:/<name>/<version>, or runs:/<run-id>/<path>."
    )
    weight: int = Field(
        default=100,
        description="Percentage of requests routed to this variant (0-100); the weights of "
        "all variants sum to 100.",
    )
    replicas: int = Field(default=1, description="Number of serving pods (0 or more).")


class Mirror(ApiModel):
    """Copy (shadow) a share of the requests to one variant; its responses are discarded."""

    cel_rules = (
        CelRule("self.percent >= 0 && self.percent <= 100", "percent must be between 0 and 100"),
    )

    variant: DnsLabel = Field(description="Name of the variant that receives the copies.")
    percent: int = Field(default=100, description="Percentage of requests mirrored (0-100).")


class TrafficSpec(ApiModel):
    """How requests are split between variants."""

    router: Literal["builtin", "gateway-api", "service"] = Field(
        default="builtin",
        description="builtin: the runtime's router Deployment splits by weight (sticky, "
        "mirror); gateway-api: an HTTPRoute with backend weights; service: one Service over "
        "all variants (split by replica count, weights ignored).",
    )
    sticky_header: HeaderName | None = Field(
        default=None,
        description="Requests with the same value of this header go to the same variant.",
    )
    mirror: Mirror | None = Field(default=None, description="Shadow traffic to a variant.")


class CanaryStep(ApiModel):
    """One step of a canary: route this weight to the new version, then pause."""

    cel_rules = (
        CelRule("self.weight >= 1 && self.weight <= 100", "weight must be between 1 and 100"),
    )

    weight: int = Field(description="Percentage routed to the new version at this step.")
    pause: Duration | None = Field(
        default=None, description="How long to hold (and analyse) before the next step."
    )


class PrometheusProvider(ApiModel):
    """Where the analysis queries run."""

    address: HttpUrl | None = Field(
        default=None,
        description="Prometheus base URL; defaults to the operator's MLOPS_PROMETHEUS_URL.",
    )


class AnalysisMetric(ApiModel):
    """A PromQL query evaluated each interval; ``result`` is its scalar value."""

    cel_rules = (
        CelRule(
            "has(self.successCondition) || has(self.failureCondition)",
            "an analysis metric needs successCondition, failureCondition or both",
        ),
    )

    name: DnsLabel = Field(description="Metric name, e.g. error-rate.")
    query: LongStr = Field(
        description="PromQL returning one number; {{namespace}}, {{deployment}}, {{variant}} "
        "and {{version}} are substituted."
    )
    success_condition: AnalysisCondition | None = Field(
        default=None, description="The measurement succeeds when true, e.g. 'result < 0.05'."
    )
    failure_condition: AnalysisCondition | None = Field(
        default=None, description="The measurement fails when true, e.g. 'result > 0.1'."
    )


class AnalysisSpec(ApiModel):
    """Prometheus analysis run during each canary pause."""

    cel_rules = (CelRule(unique("self.metrics", "name"), "analysis metric names must be unique"),)

    prometheus: PrometheusProvider = Field(
        default_factory=PrometheusProvider,
        description="The Prometheus to query.",
        json_schema_extra=default_of(PrometheusProvider),
    )
    interval: Duration = Field(default="1m", description="Time between measurements.")
    metrics: Annotated[list[AnalysisMetric], Field(min_length=1, max_length=16)] = Field(
        description="Queries and their success/failure conditions."
    )
    failure_limit: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Failed measurements tolerated; one more aborts (and rolls back).",
    )


class RolloutSpec(ApiModel):
    """How a newly resolved version of a variant replaces the old one."""

    cel_rules = (
        CelRule(
            "self.strategy != 'Canary' || (has(self.steps) && size(self.steps) > 0)",
            "strategy Canary needs at least one step",
        ),
        CelRule(
            "!has(self.steps) || self.steps.map(s, s.weight).isSorted()",
            "canary step weights must not decrease",
        ),
    )

    strategy: Literal["Immediate", "Canary", "AB"] = Field(
        default="Immediate",
        description="Immediate: switch at once; Canary: shift traffic to the new version in "
        "steps, analysing each pause; AB: keep the variants' weights and report analysis, "
        "promotion is manual.",
    )
    steps: Annotated[list[CanaryStep], Field(max_length=20)] | None = Field(
        default=None, description="Canary steps of weight and pause."
    )
    analysis: AnalysisSpec | None = Field(
        default=None, description="Prometheus queries that pass or fail each step."
    )
    auto_promote: bool = Field(
        default=True, description="Finish the canary automatically after the last step."
    )
    auto_rollback: bool = Field(
        default=True, description="Return to the previous version when analysis fails."
    )


class RetrainSpec(ApiModel):
    """Start a TrainingRun when an alert fires (via the operator's Alertmanager webhook)."""

    cel_rules = (CelRule("self.maxConcurrent >= 1", "maxConcurrent must be at least 1"),)

    template: TrainingRunSpec = Field(
        description="Spec of the TrainingRun to create; its model must equal spec.model."
    )
    alerts: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253)]],
        Field(min_length=1, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(description="Alert names (alertname label) that trigger a retrain.")
    cooldown: Duration = Field(
        default="1h", description="Minimum time between two retrains started by alerts."
    )
    max_concurrent: int = Field(
        default=1, le=10, description="Maximum TrainingRuns of this deployment running at once."
    )


class ModelDeploymentSpec(ApiModel):
    """Desired state of a ModelDeployment."""

    cel_rules = (
        CelRule(
            unique("self.variants", "name"),
            "variant names must be unique",
            field_path=".variants",
        ),
        CelRule(
            "self.variants.map(v, v.weight).sum() == 100",
            "the weights of all variants must sum to 100",
            field_path=".variants",
        ),
        CelRule(
            "self.variants.all(v, !v.modelUri.startsWith('models:/') || "
            "v.modelUri.startsWith('models:/' + self.model + '@') || "
            "v.modelUri.startsWith('models:/' + self.model + '/'))",
            "every models:/ URI of a variant must refer to spec.model",
            field_path=".variants",
        ),
        CelRule(
            "!has(self.traffic) || !has(self.traffic.mirror) || "
            "self.variants.exists(v, v.name == self.traffic.mirror.variant)",
            "traffic.mirror.variant must name one of the variants",
            field_path=".traffic.mirror.variant",
        ),
        CelRule(
            "!has(self.retrain) || self.retrain.template.model == self.model",
            "retrain.template.model must equal spec.model",
            field_path=".retrain.template.model",
        ),
    )

    model: ModelName = Field(description="Registered model name, e.g. iris.")
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec,
        description="Serving image, resources, port and autoscaling.",
        json_schema_extra=default_of(RuntimeSpec),
    )
    variants: Annotated[list[Variant], Field(min_length=1, max_length=MAX_VARIANTS)] = Field(
        description="Models served side by side (champion, challenger, ...) with their "
        "traffic weights. The first variant is the champion, the second the challenger."
    )
    traffic: TrafficSpec = Field(
        default_factory=TrafficSpec,
        description="Router, sticky sessions and mirroring.",
        json_schema_extra=default_of(TrafficSpec),
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        description="How new versions are rolled out: Immediate, Canary steps with analysis.",
        json_schema_extra=default_of(RolloutSpec),
    )
    retrain: RetrainSpec | None = Field(
        default=None, description="Retrain on alerts with a TrainingRun template."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelDeploymentSpec:
        names = [v.name for v in self.variants]
        if len(names) != len(set(names)):
            raise ValueError("variant names must be unique")
        for v in self.variants:
            if not 0 <= v.weight <= 100:
                raise ValueError("weight must be between 0 and 100")
            if v.replicas < 0:
                raise ValueError("replicas must not be negative")
            if v.name == "router" or v.name.endswith("-canary"):
                raise ValueError("a variant must not be called router or end in -canary: the "
                                 "router's and the canaries' objects use those names")
        if sum(v.weight for v in self.variants) != 100:
            raise ValueError("the weights of all variants must sum to 100")
        mirror = self.traffic.mirror
        if mirror is not None and mirror.variant not in names:
            raise ValueError("traffic.mirror.variant must name one of the variants")
        if self.runtime.port == GRPC_PORT:
            raise ValueError(GRPC_PORT_CLASH)
        if self.rollout.strategy == "Canary" and not self.rollout.steps:
            raise ValueError("strategy Canary needs at least one step")
        if self.retrain is not None and self.retrain.template.model != self.model:
            raise ValueError("retrain.template.model must equal spec.model")
        return self


ModelDeploymentPhase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


class VariantStatus(ApiModel):
    """Observed state of one variant."""

    name: ShortStr = Field(description="Variant name.")
    version: ShortStr | None = Field(
        default=None, description="Pinned registry version served by every replica."
    )
    model_uri: Annotated[str, Field(max_length=512)] | None = Field(
        default=None, description="Pinned URI served: models:/<name>/<version> or runs:/..."
    )
    weight: int | None = Field(default=None, description="Current traffic weight (percent).")
    replicas: int | None = Field(default=None, description="Desired replicas.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas.")


class Measurement(ApiModel):
    """The latest measurement of one analysis metric."""

    metric: ShortStr = Field(description="Analysis metric name.")
    value: float | None = Field(default=None, description="Query result; absent: no data.")
    verdict: Literal["Successful", "Failed", "Inconclusive"] = Field(
        description="Successful, Failed, or Inconclusive (no data, or Prometheus unavailable)."
    )
    variant: ShortStr | None = Field(default=None, description="Variant measured (AB).")
    query: LongStr | None = Field(default=None, description="The PromQL that ran.")
    message: Str | None = Field(
        default=None, description="What was found: the result, no data, or why Prometheus "
        "could not be asked."
    )


class RolloutStatus(ApiModel):
    """Progress of a canary (one variant at a time)."""

    variant: ShortStr | None = Field(default=None, description="Variant being rolled out.")
    version: ShortStr | None = Field(default=None, description="Version being rolled out.")
    from_version: ShortStr | None = Field(
        default=None, description="Stable version the canary started from."
    )
    step: int | None = Field(default=None, description="Index of the current step.")
    weight: int | None = Field(default=None, description="Current weight of the new version.")
    failures: int | None = Field(default=None, description="Failed analysis measurements.")
    state: Literal["Progressing", "Promoting", "Paused", "Aborted"] | None = Field(
        default=None,
        description="Progressing through the steps, Promoting (the stable pods take the new "
        "version), Paused (waiting for a human: autoPromote false), or Aborted (rolled back).",
    )
    step_started: Timestamp | None = Field(
        default=None, description="When the current step's weight took effect."
    )
    last_analysis: Timestamp | None = Field(
        default=None, description="When the analysis queries last ran."
    )
    measurements: (
        Annotated[list[Measurement], Field(max_length=64)] | None
    ) = Field(default=None, description="Latest measurement of each analysis metric.")
    message: Str | None = Field(default=None, description="Latest analysis result.")


class RetrainStatus(ApiModel):
    """The last retrain started by an alert."""

    time: Timestamp | None = Field(default=None, description="When it was started.")
    alert: ShortStr | None = Field(default=None, description="Alert that triggered it.")
    training_run: ShortStr | None = Field(default=None, description="TrainingRun created.")


class ModelDeploymentStatus(ApiModel):
    """Observed state of a ModelDeployment, written by the operator."""

    phase: ModelDeploymentPhase | None = Field(
        default=None, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    variants: (
        Annotated[
            list[VariantStatus],
            Field(
                max_length=MAX_VARIANTS,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="Per-variant version, weight and readiness.")
    url: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="In-cluster URL of the inference endpoint."
    )
    champion: ShortStr | None = Field(
        default=None, description="Version served by the first variant (CHAMPION column)."
    )
    challenger: ShortStr | None = Field(
        default=None, description="Version served by the second variant (CHALLENGER column)."
    )
    traffic: ShortStr | None = Field(
        default=None,
        description="Traffic summary, e.g. 'champion=90 challenger=10' (TRAFFIC column).",
    )
    ready: Annotated[str, Field(max_length=32)] | None = Field(
        default=None, description="Ready over desired replicas, e.g. '2/2' (READY column)."
    )
    rollout: RolloutStatus | None = Field(default=None, description="Canary progress.")
    last_retrain: RetrainStatus | None = Field(
        default=None, description="The last retrain started by an alert."
    )
    message: Str | None = Field(default=None, description="Summary of the last transition.")
    conditions: Conditions | None = Field(
        default=None, description="Ready, Progressing and Degraded."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation last reconciled."
    )


MODEL_DEPLOYMENT = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=("md",),
    description="Serves a model as weighted variants (champion/challenger, A/B, canary) and "
    "retrains it on alerts.",
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", description="Registered model name."),
        PrinterColumn("Champion", ".status.champion", description="Champion version."),
        PrinterColumn("Challenger", ".status.challenger", description="Challenger version."),
        PrinterColumn("Traffic", ".status.traffic", description="Traffic split."),
        PrinterColumn("Ready", ".status.ready", description="Ready/desired replicas."),
        PrinterColumn("Phase", ".status.phase", description="Lifecycle phase."),
        PrinterColumn("URL", ".status.url", description="Inference endpoint.", priority=1),
        AGE_COLUMN,
    ),
)
