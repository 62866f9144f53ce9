"""Pure functions: container environment as the kubelet builds it.

Order and semantics follow the kubelet: ``envFrom`` sources first (in order, with their
``prefix``; keys that are not valid variable names are skipped), then ``env`` entries, each
value ``$(VAR)``-expanded against everything defined before it; ``command`` and ``args`` are
expanded against the final environment. Lookups of ConfigMaps and Secrets are injected, so these
functions never do I/O themselves.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

JSON = dict[str, Any]

#: ``lookup(kind, namespace, name)`` → the object (``kind`` is ``configmaps``/``secrets``) or None.
Lookup = Callable[[str, str, str], JSON | None]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


class EnvError(Exception):
    """The environment cannot be built (kubelet: ``CreateContainerConfigError``)."""


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references like Kubernetes (``k8s.io/kubernetes/third_party/forked/golang/expansion``).

    ``$(VAR)`` becomes the value of VAR when defined and stays verbatim otherwise; ``$$`` is an
    escaped ``$`` (so ``$$(VAR)`` yields ``$(VAR)``); any other ``$`` is kept as is, and an
    unterminated ``$(`` is kept verbatim.
    """
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = value.find(")", i + 2)
            if end < 0:
                out.append(value[i:])
                break
            name = value[i + 2 : end]
            out.append(env[name] if name in env else value[i : end + 1])
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# -- quantities -------------------------------------------------------------------------------
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "u": Decimal("0.000001"),
    "n": Decimal("0.000000001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str | int | float) -> Decimal:
    """Parse a Kubernetes resource quantity (``500m``, ``1Gi``, ``2``, ``1e3``)."""
    if isinstance(text, int | float):
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"invalid quantity {text!r}")
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {text!r}") from exc


def resource_field_value(
    container: JSON, resource: str, divisor: str | None, allocatable: Mapping[str, str]
) -> str:
    """``resourceFieldRef``: limits fall back to the node's allocatable; rounded up like kubelet."""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise EnvError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0") if kind == "limits" else "0"
    value = parse_quantity(raw)
    div = parse_quantity(divisor or "1")
    if div == 0:
        raise EnvError("resourceFieldRef divisor must not be zero")
    return str(math.ceil(value / div))


# -- downward API -----------------------------------------------------------------------------
def field_ref_value(pod: JSON, field_path: str) -> str:
    """Resolve a downward-API ``fieldRef.fieldPath`` against a pod (status as we will report it)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    match = _LABEL_PATH.match(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    if field_path in ("status.podIPs", "status.hostIPs"):
        key = field_path.split(".", 1)[1]
        return ",".join(item.get("ip", "") for item in status.get(key) or [])
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(field_path.split(".", 1)[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise EnvError(f"unsupported fieldRef fieldPath {field_path!r}")


def config_value(obj: JSON, key: str) -> str | None:
    """A key of a ConfigMap (``data``/``binaryData``) or Secret (base64 ``data``/``stringData``)."""
    if obj.get("kind") == "Secret" or "type" in obj:
        if key in (obj.get("stringData") or {}):
            return str(obj["stringData"][key])
        raw = (obj.get("data") or {}).get(key)
        return None if raw is None else base64.b64decode(raw).decode("utf-8", "replace")
    if key in (obj.get("data") or {}):
        return str(obj["data"][key])
    raw = (obj.get("binaryData") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode("utf-8", "replace")


def config_items(obj: JSON) -> dict[str, str]:
    """All keys of a ConfigMap or Secret, decoded."""
    keys = list((obj.get("data") or {}).keys()) + list((obj.get("binaryData") or {}).keys())
    keys += list((obj.get("stringData") or {}).keys())
    out: dict[str, str] = {}
    for key in keys:
        value = config_value(obj, key)
        if value is not None:
            out[key] = value
    return out


@dataclass
class EnvResult:
    """The resolved environment and the names skipped from ``envFrom`` (invalid names)."""

    env: dict[str, str]
    skipped: list[str]


def _lookup_required(
    lookup: Lookup, kind: str, namespace: str, name: str, optional: bool
) -> JSON | None:
    obj = lookup(kind, namespace, name)
    if obj is None and not optional:
        singular = "configmap" if kind == "configmaps" else "secret"
        raise EnvError(f'{singular} "{name}" not found')
    return obj


def resolve_env(
    pod: JSON,
    container: JSON,
    lookup: Lookup,
    *,
    base: Mapping[str, str] | None = None,
    allocatable: Mapping[str, str] | None = None,
) -> EnvResult:
    """Build a container's environment (``envFrom`` then ``env``), kubelet style.

    ``base`` holds variables defined before the pod's own (service links, ``HOSTNAME``...); they
    are visible to ``$(VAR)`` expansion and overridable. ``pod['status']`` must already carry
    ``podIP``/``hostIP`` for those fieldRefs to resolve.
    """
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    env: dict[str, str] = dict(base or {})
    skipped: list[str] = []
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "configMapRef" in source:
            ref, kind = source["configMapRef"], "configmaps"
        elif "secretRef" in source:
            ref, kind = source["secretRef"], "secrets"
        else:
            continue
        obj = _lookup_required(lookup, kind, namespace, ref.get("name", ""), bool(ref.get("optional")))
        if obj is None:
            continue
        for key, value in config_items(obj).items():
            name = prefix + key
            if not _ENV_NAME.match(name):
                skipped.append(name)
                continue
            env[name] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand_vars(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"] or {}
        if "fieldRef" in source:
            env[name] = field_ref_value(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                target = next(
                    (c for c in _all_containers(pod) if c.get("name") == ref["containerName"]),
                    container,
                )
            env[name] = resource_field_value(
                target, ref.get("resource", ""), ref.get("divisor"), allocatable or {}
            )
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            is_cm = "configMapKeyRef" in source
            ref = source["configMapKeyRef" if is_cm else "secretKeyRef"]
            kind = "configmaps" if is_cm else "secrets"
            optional = bool(ref.get("optional"))
            obj = _lookup_required(lookup, kind, namespace, ref.get("name", ""), optional)
            value = None if obj is None else config_value(obj, ref.get("key", ""))
            if value is None:
                if optional:
                    continue
                what = "configmap" if is_cm else "secret"
                raise EnvError(f'couldn\'t find key {ref.get("key")} in {what} {namespace}/{ref.get("name")}')
            env[name] = value
        else:
            raise EnvError(f"unsupported valueFrom for env var {name!r}")
    return EnvResult(env=env, skipped=skipped)


def _all_containers(pod: JSON) -> list[JSON]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def expand_argv(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """Expand ``$(VAR)`` in command/args against the final environment."""
    return [expand_vars(str(a), env) for a in argv]
