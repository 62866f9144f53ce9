"""The router's configuration document (a file or a ConfigMap key), e.g.::

stickyHeader: x-user-id          # optional: same header value → same variant
namespace: models                # optional: where the Services live
variants:
  - name: champion
    weight: 90
    service: iris-champion       # discovered from EndpointSlices
    port: 8080                   # optional: port number or name; default: the slice's first
  - name: challenger
    weight: 10
    endpoints: ["http://127.0.0.1:9001"]   # or static upstreams
mirror:                          # optional: gets a copy of each request, response dropped
  name: shadow
  service: iris-shadow
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Upstream(_Model):
    """A set of model-server replicas: a Kubernetes Service or a static list of URLs."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    service: str | None = Field(default=None, description="Service whose EndpointSlices to use")
    port: int | str | None = Field(default=None, description="port number or name in the slices")
    endpoints: list[str] | None = Field(default=None, description="static http://host:port URLs")

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or not parts.port:
                raise ValueError(f"endpoint {url!r} must look like http://host:port")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Upstream:
        if (self.service is None) == (self.endpoints is None):
            raise ValueError(f"{self.name}: give exactly one of 'service' or 'endpoints'")
        return self


class Variant(Upstream):
    """An upstream that receives a share of the traffic."""

    weight: float = Field(..., ge=0)


class RouterConfig(_Model):
    """The whole routing config."""

    variants: list[Variant] = Field(..., min_length=1)
    sticky_header: str | None = Field(default=None, description="header carrying the sticky key")
    mirror: Upstream | None = None
    namespace: str | None = None

    @model_validator(mode="after")
    def _check(self) -> RouterConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        if self.sticky_header is not None:
            self.sticky_header = self.sticky_header.lower()
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Variant name → weight."""
        return {v.name: v.weight for v in self.variants}


def parse_config(text: str | bytes) -> RouterConfig:
    """Parse YAML (or JSON, a subset of YAML); raises ``ValueError`` on a bad document."""
    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"router config is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("router config must be a mapping")
    return RouterConfig.model_validate(document)


def dump_config(config: RouterConfig) -> str:
    """Serialise a config (camelCase keys) as JSON, which the parser also reads."""
    return json.dumps(config.model_dump(by_alias=True, exclude_none=True))
