"""Shared building blocks of the mlops.dev API.

Everything here is used by more than one kind: the pydantic base class that knows how to carry
CEL rules into the generated CRD schema, the string formats (durations, model URIs, DNS names)
with the regular expressions that both Python and the apiserver's CEL evaluate, the
Kubernetes-style ``Condition``, and structural copies of the few core/v1 sub-objects a
TrainingRun or a ModelDeployment embeds (env vars, resources, tolerations).

The regular expressions are written in the subset shared by Python's ``re`` and RE2 (CEL's
``matches()``), without backslashes, so that one constant serves both sides unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mlops"

# --------------------------------------------------------------------------------------------
# CEL rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry: a CEL expression and its human message."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, str]:
        """Render the rule as it appears in the CRD schema."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


VALIDATIONS_KEY = "x-kubernetes-validations"


def with_cel(*rules: CelRule, **extra: Any) -> dict[str, Any]:
    """Return a ``json_schema_extra`` dict placing ``rules`` on a field's schema node."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out[VALIDATIONS_KEY] = [r.to_schema() for r in rules]
    return out


def default_of(model: type[ApiModel]) -> dict[str, Any]:
    """``json_schema_extra`` giving an object field the CRD default of all its own defaults.

    The apiserver validates a default with the node's CEL rules *before* nested defaults
    apply, so ``default: {}`` would fail rules that read defaulted fields; spell them out.
    """
    return {"default": model().to_k8s()}


class ApiModel(BaseModel):
    """Base class of every spec/status model.

    camelCase aliases (``by_alias=True`` gives the Kubernetes field names), unknown fields are
    rejected (the CRD schema is generated from these models, so the apiserver never sends one),
    and a class attribute ``cel_rules`` whose rules the JSON schema carries as
    ``x-kubernetes-validations`` on the object's own node. Rules that belong to a single field
    are attached to that field with :func:`with_cel` instead.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=False,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Add this class's own ``cel_rules`` (not inherited ones) to its schema."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        rules: tuple[CelRule, ...] = cls.__dict__.get("cel_rules", ())
        if rules:
            target[VALIDATIONS_KEY] = [r.to_schema() for r in rules]
        return schema

    def to_k8s(self) -> dict[str, Any]:
        """Dump in the shape the apiserver stores: camelCase, JSON types, no ``None``s."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------------------------
# String formats shared by Python validation and CEL
# --------------------------------------------------------------------------------------------

#: A DNS-1123 label (Kubernetes object names of Services, variant names, ...).
DNS_LABEL_RE = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain (most Kubernetes object names).
DNS_SUBDOMAIN_RE = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A registered model name; also a valid label value so that children can be labelled with it.
MODEL_NAME_RE = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
#: An MLflow alias such as ``champion``.
ALIAS_RE = "^[A-Za-z][-A-Za-z0-9_]*$"
#: Aliases MLflow reserves (``latest`` and ``v<N>``); matched case-insensitively.
RESERVED_ALIAS_RE = "^([lL][aA][tT][eE][sS][tT]|[vV][0-9]+)$"
#: A registry version number.
MODEL_VERSION_RE = "^[1-9][0-9]*$"
_RUN = "runs:/[0-9A-Za-z_-]+/[-A-Za-z0-9_./]+"
_MODEL = "[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_MODELS = f"models:/{_MODEL}(@[A-Za-z][-A-Za-z0-9_]*|/[1-9][0-9]*)"
#: What a ModelDeployment variant serves: a registry alias, a pinned version, or a run's model.
MODEL_URI_RE = f"^({_MODELS}|{_RUN})$"
#: What a ModelVersion registers: a run's model, another version, or an artifact location.
SOURCE_URI_RE = (
    f"^({_RUN}|{_MODELS}|(s3|gs|wasbs|abfss|hdfs|dbfs|file|http|https|mlflow-artifacts):/[^ ]+)$"
)
#: A Go-style duration restricted to the units that make sense here: ``30s``, ``5m``, ``1h30m``.
DURATION_RE = "^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile("([0-9]+(?:[.][0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: An analysis condition over the query's result: ``result < 0.05``.
CONDITION_RE = "^result *(<=|>=|==|!=|<|>) *-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$"
#: An HTTP header name.
HEADER_RE = "^[A-Za-z0-9][-A-Za-z0-9]*$"
#: An http(s) URL.
HTTP_URL_RE = "^https?://[^ ]+$"

MSG_DURATION = "must be a duration such as 30s, 5m or 1h30m (units ms, s, m, h)"
MSG_MODEL_NAME = (
    "must be a model name of letters, digits, '-', '_' and '.', starting and ending with an "
    "alphanumeric character"
)
MSG_ALIAS = "must be an alias of letters, digits, '-' and '_' starting with a letter"
MSG_RESERVED_ALIAS = "must not be 'latest' or 'v<number>' (reserved by MLflow)"
MSG_DNS_LABEL = (
    "must be a DNS label: lower case letters, digits and '-', starting and ending with an "
    "alphanumeric character"
)
MSG_DNS_SUBDOMAIN = "must be a DNS subdomain: lower case alphanumerics, '-' and '.'"
MSG_MODEL_URI = (
    "must be a model URI: models:/<name>@<alias>, models:/<name>/<version> or runs:/<run-id>/<path>"
)
MSG_SOURCE_URI = (
    "must be runs:/<run-id>/<path>, models:/<name>/<version>, models:/<name>@<alias> or an "
    "artifact URI (s3://, gs://, file://, mlflow-artifacts:/, ...)"
)
MSG_VERSION = "must be a registry version number such as 3"
MSG_CONDITION = "must compare the query result with a number, e.g. 'result < 0.05'"
MSG_HEADER = "must be an HTTP header name"
MSG_HTTP_URL = "must be an http:// or https:// URL"


def matches(regex: str, message: str) -> CelRule:
    """A CEL rule ``self.matches(regex)`` for a string field."""
    return CelRule(f"self.matches('{regex}')", message)


def _python_check(regex: str, message: str) -> AfterValidator:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def parse_duration(text: str) -> timedelta:
    """Parse a duration of :data:`DURATION_RE` (``1h30m``, ``250ms``) into a ``timedelta``."""
    if not re.fullmatch(DURATION_RE, text):
        raise ValueError(f"{text!r} {MSG_DURATION}")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


def _reject_reserved_alias(value: str) -> str:
    if re.fullmatch(RESERVED_ALIAS_RE, value):
        raise ValueError(MSG_RESERVED_ALIAS)
    return value


def _formatted(
    regex: str, message: str, max_length: int, *extra_rules: CelRule, min_length: int = 1
) -> Any:
    """Build an annotated ``str`` type validated by ``regex`` in Python and in CEL."""
    return Annotated[
        str,
        Field(
            min_length=min_length,
            max_length=max_length,
            json_schema_extra=with_cel(matches(regex, message), *extra_rules),
        ),
        _python_check(regex, message),
    ]


Duration = Annotated[
    str,
    Field(max_length=32, json_schema_extra=with_cel(matches(DURATION_RE, MSG_DURATION))),
    AfterValidator(_check_duration),
]
ModelName = _formatted(MODEL_NAME_RE, MSG_MODEL_NAME, 63)
AliasName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        json_schema_extra=with_cel(
            matches(ALIAS_RE, MSG_ALIAS),
            CelRule(f"!self.matches('{RESERVED_ALIAS_RE}')", MSG_RESERVED_ALIAS),
        ),
    ),
    _python_check(ALIAS_RE, MSG_ALIAS),
    AfterValidator(_reject_reserved_alias),
]
DnsLabel = _formatted(DNS_LABEL_RE, MSG_DNS_LABEL, 63)
DnsSubdomain = _formatted(DNS_SUBDOMAIN_RE, MSG_DNS_SUBDOMAIN, 253)
ModelUri = _formatted(MODEL_URI_RE, MSG_MODEL_URI, 512)
SourceUri = _formatted(SOURCE_URI_RE, MSG_SOURCE_URI, 2048)
RegistryVersion = _formatted(MODEL_VERSION_RE, MSG_VERSION, 20)
AnalysisCondition = _formatted(CONDITION_RE, MSG_CONDITION, 128)
HeaderName = _formatted(HEADER_RE, MSG_HEADER, 128)
HttpUrl = _formatted(HTTP_URL_RE, MSG_HTTP_URL, 2048)

#: Bounded plain strings (CEL cost estimation needs every string and list bounded).
ShortStr = Annotated[str, Field(max_length=253)]
Str = Annotated[str, Field(max_length=1024)]
LongStr = Annotated[str, Field(max_length=4096)]
MetricName = Annotated[str, Field(min_length=1, max_length=250)]
#: A Kubernetes resource quantity (``500m``, ``2Gi``, ``1``): an int or a string.
Quantity = int | Annotated[str, Field(max_length=64)]
#: A time in RFC 3339 (``2024-05-01T12:00:00Z``), as the operator writes it.
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]


def unique(list_expr: str, key: str) -> str:
    """CEL that is true when ``key`` is unique among the items of ``list_expr``."""
    return f"{list_expr}.all(x, {list_expr}.exists_one(y, y.{key} == x.{key}))"


# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------


class Condition(ApiModel):
    """A Kubernetes-style condition (``metav1.Condition``): the latest observation of one aspect
    of the object's state. Every kind reports ``Ready``; ``Progressing`` and ``Degraded`` where
    they apply."""

    type: Annotated[str, Field(min_length=1, max_length=316)] = Field(
        description="Type of condition in CamelCase, e.g. Ready, Progressing, Degraded."
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="Status of the condition: True, False or Unknown."
    )
    reason: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None,
        description="Programmatic identifier (CamelCase) of the reason for the last transition.",
    )
    message: Annotated[str, Field(max_length=32768)] | None = Field(
        default=None, description="Human-readable message with details about the transition."
    )
    last_transition_time: Timestamp | None = Field(
        default=None, description="When the condition last changed from one status to another."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation that the condition was set based upon.",
    )


#: Schema extras of every ``conditions`` list: a map keyed by ``type``.
CONDITIONS_LIST = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}

Conditions = Annotated[
    list[Condition],
    Field(max_length=16, json_schema_extra=CONDITIONS_LIST),
]


class PrimaryMetric(ApiModel):
    """The metric shown in ``kubectl get`` (METRIC and VALUE columns)."""

    name: MetricName = Field(description="Name of the metric, e.g. accuracy.")
    value: float | None = Field(default=None, description="Its value.")


# --------------------------------------------------------------------------------------------
# core/v1 sub-objects, modelled structurally
# --------------------------------------------------------------------------------------------


class ObjectFieldSelector(ApiModel):
    """Selects a field of the pod (downward API), e.g. ``status.podIP``."""

    api_version: ShortStr | None = Field(
        default=None, description='Version of the schema fieldPath is written in ("v1").'
    )
    field_path: ShortStr = Field(description="Path of the field to select, e.g. metadata.name.")


class ResourceFieldSelector(ApiModel):
    """Selects a resource limit or request of a container (downward API)."""

    container_name: ShortStr | None = Field(
        default=None, description="Container name (defaults to the container itself)."
    )
    resource: ShortStr = Field(description="Resource to select, e.g. limits.cpu.")
    divisor: Quantity | None = Field(
        default=None, description="Output format of the exposed resources, defaults to 1."
    )


class KeySelector(ApiModel):
    """Selects a key of a ConfigMap or Secret in the object's namespace."""

    name: ShortStr = Field(description="Name of the ConfigMap or Secret.")
    key: ShortStr = Field(description="The key to select.")
    optional: bool | None = Field(
        default=None, description="Whether the ConfigMap/Secret or its key may be missing."
    )


class EnvVarSource(ApiModel):
    """Where an environment variable takes its value from (exactly one source)."""

    cel_rules = (
        CelRule(
            "[has(self.fieldRef), has(self.resourceFieldRef), has(self.configMapKeyRef),"
            " has(self.secretKeyRef)].filter(x, x).size() == 1",
            "exactly one of fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef "
            "must be set",
        ),
    )

    field_ref: ObjectFieldSelector | None = Field(
        default=None, description="A field of the pod: metadata.name, status.podIP, ..."
    )
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource limit or request of the container."
    )
    config_map_key_ref: KeySelector | None = Field(
        default=None, description="A key of a ConfigMap."
    )
    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")


class EnvVar(ApiModel):
    """An environment variable of a container (core/v1 EnvVar)."""

    cel_rules = (
        CelRule(
            "!(has(self.value) && has(self.valueFrom))",
            "value and valueFrom are mutually exclusive",
        ),
    )

    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="Name of the environment variable."
    )
    value: LongStr | None = Field(default=None, description="A literal value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a pod field, a ConfigMap or a Secret."
    )


class NamedRef(ApiModel):
    """A reference to a ConfigMap or Secret by name."""

    name: ShortStr = Field(description="Name of the ConfigMap or Secret.")
    optional: bool | None = Field(default=None, description="Whether it may be missing.")


class EnvFromSource(ApiModel):
    """Import all keys of a ConfigMap or Secret as environment variables."""

    cel_rules = (
        CelRule(
            "has(self.configMapRef) != has(self.secretRef)",
            "exactly one of configMapRef and secretRef must be set",
        ),
    )

    prefix: ShortStr | None = Field(default=None, description="Prefix added to every key.")
    config_map_ref: NamedRef | None = Field(default=None, description="The ConfigMap.")
    secret_ref: NamedRef | None = Field(default=None, description="The Secret.")


ResourceList = Annotated[
    dict[str, Quantity],
    Field(json_schema_extra={"maxProperties": 16}),
]


class ResourceRequirements(ApiModel):
    """Compute resources of a container (core/v1 ResourceRequirements)."""

    requests: ResourceList | None = Field(
        default=None,
        description="Minimum resources required, e.g. {cpu: 500m, memory: 1Gi}.",
    )
    limits: ResourceList | None = Field(
        default=None,
        description='Maximum resources allowed, e.g. {memory: 2Gi, "nvidia.com/gpu": 1}.',
    )


class Toleration(ApiModel):
    """Lets the pod schedule onto nodes with a matching taint (core/v1 Toleration)."""

    key: ShortStr | None = Field(
        default=None, description="Taint key; empty with operator Exists matches all taints."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: ShortStr | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


EnvList = Annotated[list[EnvVar], Field(max_length=128)]
EnvFromList = Annotated[list[EnvFromSource], Field(max_length=32)]
StringList = Annotated[list[LongStr], Field(max_length=64)]
StringMap = Annotated[
    dict[str, Annotated[str, Field(max_length=1024)]],
    Field(json_schema_extra={"maxProperties": 64}),
]
Tolerations = Annotated[list[Toleration], Field(max_length=32)]


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry of a CRD version."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str | None = None

    def to_crd(self) -> dict[str, Any]:
        """Render as it appears in the CRD."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.format:
            out["format"] = self.format
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class KindInfo:
    """Everything the CRD generator needs to know about one kind."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec: type[ApiModel]
    status: type[ApiModel]
    printer_columns: tuple[PrinterColumn, ...]
    #: Rules on the whole object (``self.spec``/``self.status``), e.g. transition rules that
    #: depend on status.
    root_rules: tuple[CelRule, ...] = ()

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``."""
        return f"{self.plural}.{GROUP}"
