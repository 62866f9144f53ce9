"""Operator configuration: environment variables with the ``MLOPS_`` prefix (pydantic settings).

Read once, in the kopf startup handler or the CLI — never at import time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything an operator deployment can tune."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    mlflow_tracking_uri: str = Field(
        "",
        description="MLflow tracking server (and Model Registry) the operator talks to; "
        "required: without it the operator reconciles nothing and its readiness probe fails",
    )
    mlflow_tracking_uri_for_pods: str | None = Field(
        None,
        description="MLflow URI that training/serving pods use, when it differs from the "
        "operator's (e.g. an in-cluster Service name); defaults to mlflow_tracking_uri",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="namespaces to watch (comma-separated); empty = cluster-wide",
    )
    default_training_image: str = Field(
        "ghcr.io/mlops-operator/mlops-runtime:0.1.0",
        description="image of training Jobs whose TrainingRun sets none",
    )
    runtime_image: str = Field(
        "ghcr.io/mlops-operator/mlops-runtime:0.1.0",
        description="serving runtime image for ModelDeployments that set none",
    )
    prometheus_url: str = Field(
        "http://127.0.0.1:9090",
        description="Prometheus the canary analysis queries when a ModelDeployment names none",
    )
    gateway_parent_refs: str = Field(
        "",
        description="parentRefs of gateway-api HTTPRoutes when a ModelDeployment has no "
        "mlops.dev/gateway-parent-refs annotation: '[namespace/]name[:section]', comma-separated",
    )
    gateway_grpc_parent_refs: str = Field(
        "",
        description="parentRefs of gateway-api GRPCRoutes when a ModelDeployment has no "
        "mlops.dev/gateway-grpc-parent-refs annotation (same syntax); empty: no GRPCRoute",
    )
    metrics_port: int = Field(8081, description="port of the operator's Prometheus /metrics")
    metrics_host: str = Field("0.0.0.0", description="bind address of /metrics")
    alert_receiver_port: int = Field(8082, description="port of the Alertmanager webhook")
    alert_receiver_host: str = Field("0.0.0.0", description="bind address of the Alertmanager webhook")
    alert_receiver_token_secret_name: str = Field(
        "", description="Secret holding the webhook's bearer token (empty: "
        "MLOPS_ALERT_RECEIVER_TOKEN, else the receiver is off)",
    )
    alert_receiver_token_secret_namespace: str = Field(
        "", description="namespace of that Secret; default the operator's own"
    )
    alert_receiver_token_secret_key: str = Field("token", description="key of the token in that Secret")
    alert_receiver_token: SecretStr | None = Field(
        None, description="the webhook's bearer token itself (development and tests; prefer the Secret)"
    )
    alert_receiver_max_body_bytes: int = Field(
        1 << 20, ge=1024, description="largest webhook body accepted (413 above)"
    )
    resync_seconds: float = Field(
        30.0, description="how often resources are re-checked (jobs, registry aliases, rollouts)"
    )
    watch_timeout_seconds: int = Field(
        300, description="server-side watch timeout; kopf reconnects after it (kopf #585)"
    )
    workers: int = Field(
        8, ge=1, le=256,
        description="reconcile passes run at once, per kind (threads: MLflow and the Kubernetes "
        "client block)",
    )
    client_timeout_seconds: float = Field(60.0, description="client-side watch/request timeout")
    mlflow_request_timeout: float = Field(10.0, description="timeout of one MLflow API call")
    peering: str | None = Field(
        None, description="kopf peering object name for HA (None = standalone)"
    )
    peering_priority: int | None = Field(
        None, ge=0, description="this replica's kopf peering priority (the highest one works, "
        "the others wait); default: random, so two replicas of one Deployment never tie"
    )
    forbidden_retry_seconds: float = Field(
        60.0, gt=0, description="when a pass is refused by the API server (403: the operator's "
        "RBAC lacks a verb), how long until it is tried again"
    )
    peering_lifetime_seconds: int = Field(
        60, ge=5, description="how long a replica's peering record counts without a heartbeat "
        "(how soon a standby takes over from a dead replica)"
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def missing(self) -> str | None:
        """What the operator cannot work without, said for its log and readiness probe (None:
        nothing is missing)."""
        if not self.mlflow_tracking_uri.strip():
            return ("MLOPS_MLFLOW_TRACKING_URI is not set (or empty): the operator needs the MLflow "
                    "tracking server's URI (chart: mlflow.trackingUri or mlflow.enabled); it stays "
                    "not ready and reconciles nothing until it is set")
        return None

    @property
    def pod_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri_for_pods or self.mlflow_tracking_uri


@lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return OperatorSettings()
