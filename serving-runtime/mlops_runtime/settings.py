"""Configuration of the model server, from environment variables prefixed ``MLOPS_RUNTIME_``."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeSettings(BaseSettings):
    """Settings of one model server process.

    Every field can be set from the environment, e.g. ``MLOPS_RUNTIME_MODEL_URI``.
    """

    model_config = SettingsConfigDict(env_prefix="MLOPS_RUNTIME_", extra="ignore")

    model_uri: str | None = Field(
        default=None,
        description="models:/name/version, models:/name@alias, or a local MLflow model directory",
    )
    model_name: str | None = Field(
        default=None, description="name served under /v2/models/{name}; default: registered name"
    )
    variant: str = Field(default="default", description="variant label used in metrics")
    host: str = Field(default="0.0.0.0", description="bind address (the pod IP in a cluster)")
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Open Inference Protocol gRPC port on the same host (0 = no gRPC)",
    )
    log_level: str = "info"

    max_batch_size: int = Field(default=64, ge=1, description="rows per gathered predict call")
    max_batch_wait_ms: float = Field(
        default=1.0,
        ge=0.0,
        description="how long a batch may wait for more requests, only while under load",
    )
    inline_predict_max_rows: int = Field(
        default=512,
        ge=0,
        description="batches up to this many rows are predicted on the event loop; larger ones "
        "in the predict thread (see bench/serving/latency_mix.py for why 512)",
    )
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1, description="payload limit")
    infer_fast_path: bool = Field(
        default=True, description="serve POST .../infer through a lean ASGI layer (same API)"
    )
    gc_freeze: bool = Field(
        default=True, description="gc.freeze() after the model loads (shorter GC pauses)"
    )
    drift_window: int = Field(default=1000, ge=10, description="rows in the drift sliding window")
    graceful_shutdown_s: float = Field(default=30.0, ge=0.0)
    keep_alive_s: float = Field(
        default=75.0, gt=0.0,
        description="an idle keep-alive connection is closed after this long; keep it above the "
        "idle timeout of whatever sends traffic here (the router reuses a connection for at most "
        "60 s; uvicorn's own default, 5 s, races clients that reuse a connection just as it "
        "closes)",
    )  # fmt: skip
    load_retries: int = Field(default=3, ge=1, description="attempts to load the model")

    @model_validator(mode="after")
    def _ports_differ(self) -> RuntimeSettings:
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(
                f"MLOPS_RUNTIME_GRPC_PORT ({self.grpc_port}) must differ from MLOPS_RUNTIME_PORT "
                "(set another port, or 0 for no gRPC)"
            )
        return self
