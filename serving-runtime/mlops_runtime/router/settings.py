"""Router process settings, from environment variables prefixed ``MLOPS_ROUTER_``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """Where the routing config comes from and how the router process behaves."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_ROUTER_", extra="ignore")

    config: str | None = Field(default=None, description="path of the config file (YAML or JSON)")
    configmap: str | None = Field(
        default=None, description="'namespace/name' (or 'name') of a ConfigMap holding the config"
    )
    configmap_key: str = Field(default="router.yaml", description="key of the config in the map")
    namespace: str | None = Field(
        default=None, description="namespace for ConfigMap/EndpointSlices (default: the pod's)"
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "info"
    reload_interval_s: float = Field(default=1.0, gt=0, description="config change poll period")
    discovery_interval_s: float = Field(default=2.0, gt=0, description="EndpointSlice poll period")
    pod_fallback: bool = Field(
        default=True,
        description="when a Service's EndpointSlices hold no ready endpoint, use its Ready pods",
    )
    upstream_timeout_s: float = Field(default=30.0, gt=0)
    ejection_s: float = Field(
        default=5.0, ge=0,
        description="an endpoint that refused a connection or answered 503 (not ready) is left "
        "out of the rotation this long, or until discovery drops and re-adds it (0: never)",
    )  # fmt: skip
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    mirror_max_in_flight: int = Field(
        default=64, ge=1, description="mirror copies beyond are dropped"
    )
    graceful_shutdown_s: float = Field(default=30.0, ge=0)
    keep_alive_s: float = Field(
        default=75.0, gt=0,
        description="an idle client connection is closed after this long (keep it above the idle "
        "timeout of the gateway or load balancer in front)",
    )  # fmt: skip
    upstream_idle_s: float = Field(
        default=60.0, ge=0,
        description="a pooled connection to a model server idle this long is not reused (below "
        "the servers' keep-alive, 75 s by default, so the router never reuses a connection the "
        "server is closing)",
    )  # fmt: skip
