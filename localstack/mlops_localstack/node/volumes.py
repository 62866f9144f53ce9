"""Volumes as local directories, and the pod's own API credentials.

Without containers there is no mount namespace, so a volume is a directory under the pod's
directory (``<pod dir>/volumes/<name>``); each container gets ``MLOPS_LOCAL_MOUNTS``, a JSON map
from its ``mountPath`` to the local path, and ``MLOPS_LOCAL_MOUNT_<NAME>`` per volume. Nothing
is rewritten in the pod's command: programs that must find their files read those variables.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .envs import EnvError, Lookup, config_items, field_ref_value, resource_field_value

JSON = dict[str, Any]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

#: ``token_provider(audience, expiration_seconds)`` → a service-account token for the pod.
TokenProvider = Callable[[str | None, int], str]


class VolumeError(Exception):
    """A volume cannot be set up yet (missing ConfigMap/Secret, token request failed...)."""


@dataclass
class Volumes:
    """Where each volume lives locally and when projected tokens need refreshing."""

    paths: dict[str, Path] = field(default_factory=dict)
    token_volumes: list[str] = field(default_factory=list)
    refresh_after: float | None = None  # seconds from now


def _write(path: Path, content: bytes, mode: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.chmod(tmp, mode if mode is not None else 0o644)
    os.replace(tmp, path)


def _safe_rel(rel: str) -> str:
    rel = rel.lstrip("/")
    if ".." in Path(rel).parts:
        raise VolumeError(f"volume item path {rel!r} must not contain '..'")
    return rel


def _write_keys(
    target: Path, obj: JSON, items: list[JSON] | None, default_mode: int | None, what: str
) -> None:
    values = {k: v.encode() for k, v in config_items(obj).items()}
    if obj.get("kind") == "Secret" or "type" in obj:
        values = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        values.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
    elif obj.get("binaryData"):
        values.update({k: base64.b64decode(v) for k, v in obj["binaryData"].items()})
    if items:
        for item in items:
            key = item.get("key", "")
            if key not in values:
                raise VolumeError(f"{what}: key {key!r} not found")
            _write(target / _safe_rel(item.get("path") or key), values[key],
                   item.get("mode", default_mode))
    else:
        for key, value in values.items():
            _write(target / _safe_rel(key), value, default_mode)


def materialize_volumes(
    pod: JSON,
    pod_dir: Path,
    lookup: Lookup,
    token_provider: TokenProvider,
    *,
    workdir: Path,
    allocatable: Mapping[str, str] | None = None,
    fallback_ca: bytes | None = None,
    only: set[str] | None = None,
) -> Volumes:
    """Create every volume of ``pod`` under ``pod_dir/volumes`` (or just those in ``only``)."""
    namespace = pod["metadata"].get("namespace") or "default"
    spec = pod.get("spec") or {}
    result = Volumes()
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    for vol in spec.get("volumes") or []:
        name = vol["name"]
        if only is not None and name not in only:
            continue
        target = pod_dir / "volumes" / name
        if "hostPath" in vol:
            path = Path(vol["hostPath"].get("path") or "/")
            if vol["hostPath"].get("type") in ("DirectoryOrCreate",):
                path.mkdir(parents=True, exist_ok=True)
            result.paths[name] = path
            continue
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"].get("claimName", name)
            path = workdir / "pvc" / namespace / claim
            path.mkdir(parents=True, exist_ok=True)
            result.paths[name] = path
            continue
        target.mkdir(parents=True, exist_ok=True)
        result.paths[name] = target
        if "configMap" in vol or "secret" in vol:
            is_cm = "configMap" in vol
            src = vol["configMap" if is_cm else "secret"]
            obj_name = src.get("name") if is_cm else src.get("secretName")
            kind = "configmaps" if is_cm else "secrets"
            obj = lookup(kind, namespace, obj_name or "")
            if obj is None:
                if src.get("optional"):
                    continue
                raise VolumeError(f'{kind[:-1]} "{obj_name}" not found')
            _write_keys(target, obj, src.get("items"), src.get("defaultMode"), f"{kind} {obj_name}")
        elif "downwardAPI" in vol:
            _write_downward(target, pod, containers, vol["downwardAPI"].get("items") or [],
                            vol["downwardAPI"].get("defaultMode"), allocatable or {})
        elif "projected" in vol:
            proj = vol["projected"]
            mode = proj.get("defaultMode")
            for source in proj.get("sources") or []:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    expiry = int(sat.get("expirationSeconds") or 3607)
                    token = token_provider(sat.get("audience"), expiry)
                    _write(target / _safe_rel(sat.get("path") or "token"), token.encode(),
                           mode if mode is not None else 0o600)
                    result.token_volumes.append(name)
                    refresh = max(60.0, expiry * 0.8)
                    result.refresh_after = min(result.refresh_after or refresh, refresh)
                elif "configMap" in source or "secret" in source:
                    is_cm = "configMap" in source
                    src = source["configMap" if is_cm else "secret"]
                    kind = "configmaps" if is_cm else "secrets"
                    obj = lookup(kind, namespace, src.get("name") or "")
                    if obj is None and is_cm and src.get("name") == "kube-root-ca.crt" and fallback_ca:
                        obj = {"data": {"ca.crt": fallback_ca.decode()}}
                    if obj is None:
                        if src.get("optional"):
                            continue
                        raise VolumeError(f'{kind[:-1]} "{src.get("name")}" not found')
                    _write_keys(target, obj, src.get("items"), mode, f"{kind} {src.get('name')}")
                elif "downwardAPI" in source:
                    _write_downward(target, pod, containers, source["downwardAPI"].get("items") or [],
                                    mode, allocatable or {})
        # emptyDir and anything else: a plain directory
    return result


def _write_downward(
    target: Path, pod: JSON, containers: list[JSON], items: list[JSON], default_mode: int | None,
    allocatable: Mapping[str, str],
) -> None:
    for item in items:
        if "fieldRef" in item:
            value = field_ref_value(pod, item["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            container = next((c for c in containers if c.get("name") == ref.get("containerName")),
                             containers[0] if containers else {})
            value = resource_field_value(container, ref.get("resource", ""), ref.get("divisor"),
                                         allocatable)
        else:
            continue
        _write(target / _safe_rel(item.get("path", "")), value.encode(),
               item.get("mode", default_mode))


def container_mounts(container: JSON, volumes: Volumes) -> dict[str, str]:
    """``mountPath`` → local path for one container (``subPath`` honoured, expanded later)."""
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        base = volumes.paths.get(mount.get("name", ""))
        if base is None:
            continue
        sub = mount.get("subPath") or ""
        local = base / _safe_rel(sub) if sub else base
        mounts[mount.get("mountPath", "")] = str(local)
    return mounts


def mount_env(mounts: Mapping[str, str], container: JSON) -> dict[str, str]:
    """``MLOPS_LOCAL_MOUNTS`` (JSON) and ``MLOPS_LOCAL_MOUNT_<VOLUME>`` for each mounted volume."""
    env = {"MLOPS_LOCAL_MOUNTS": json.dumps(dict(mounts), sort_keys=True)}
    for mount in container.get("volumeMounts") or []:
        local = mounts.get(mount.get("mountPath", ""))
        if local:
            key = re.sub(r"[^A-Za-z0-9]", "_", mount.get("name", "")).upper()
            env[f"MLOPS_LOCAL_MOUNT_{key}"] = local
    return env


def service_account_dir(mounts: Mapping[str, str]) -> str | None:
    """The local directory holding the pod's token, when the container mounts one."""
    local = mounts.get(SERVICE_ACCOUNT_DIR)
    if local and (Path(local) / "token").exists():
        return local
    return None


def write_pod_kubeconfig(
    path: Path, *, server: str, token_file: Path, ca_file: Path | None, namespace: str,
    insecure: bool = False,
) -> Path:
    """A kubeconfig that authenticates as the pod's service account (via ``tokenFile``)."""
    cluster: JSON = {"server": server}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    elif ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "pod", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "pod", "context": {"cluster": "local", "user": "pod",
                                                  "namespace": namespace}}],
        "current-context": "pod",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


__all__ = [
    "EnvError",
    "SERVICE_ACCOUNT_DIR",
    "VolumeError",
    "Volumes",
    "container_mounts",
    "materialize_volumes",
    "mount_env",
    "service_account_dir",
    "write_pod_kubeconfig",
]
