"""Open Inference Protocol (V2) message types.

These document the REST API in OpenAPI. The hot path does not build them: it parses with orjson
and validates by hand (see :mod:`mlops_runtime.codec`), which is several times faster.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: str


class TensorMetadata(BaseModel):
    """Name, datatype and shape of one input or output tensor (-1 = variable)."""

    name: str
    datatype: str
    shape: list[int]


class MetadataServerResponse(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str] = []


class MetadataModelResponse(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]``."""

    name: str
    versions: list[str] = []
    platform: str
    inputs: list[TensorMetadata] = []
    outputs: list[TensorMetadata] = []
    parameters: dict[str, Any] = {}


class RequestInput(BaseModel):
    """One input tensor; ``data`` is flat or nested in row-major order."""

    name: str
    shape: list[int] = Field(..., description="dimensions; their product is the element count")
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    """An output the client asks for (``predict`` or ``predict_proba``)."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(..., min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """One output tensor."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    """The body of a successful inference."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class PredictRequest(BaseModel):
    """``POST /predict``: rows as lists of numbers, or objects keyed by feature name."""

    instances: list[list[Any] | dict[str, Any]] = Field(..., min_length=1)


class PredictResponse(BaseModel):
    """``POST /predict`` result, one prediction per instance."""

    predictions: list[Any]
    model_name: str
    model_version: str | None = None


class ReadyResponse(BaseModel):
    """Readiness of the server or a model (200 when ready, 503 when not)."""

    ready: bool
    reason: str | None = None
