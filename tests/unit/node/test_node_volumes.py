"""Volumes as directories, mounts mapping, the pod's kubeconfig."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from mlops_localstack.node.volumes import (
    SERVICE_ACCOUNT_DIR,
    VolumeError,
    container_mounts,
    materialize_volumes,
    mount_env,
    service_account_dir,
    write_pod_kubeconfig,
)

OBJECTS = {
    ("configmaps", "ns", "cfg"): {"kind": "ConfigMap", "data": {"a.txt": "A", "b.txt": "B"},
                                  "binaryData": {"bin": base64.b64encode(b"\x00\x01").decode()}},
    ("secrets", "ns", "sec"): {"kind": "Secret", "type": "Opaque",
                               "data": {"pw": base64.b64encode(b"s3cret").decode()}},
    ("configmaps", "ns", "kube-root-ca.crt"): {"kind": "ConfigMap", "data": {"ca.crt": "CA"}},
}


def lookup(kind: str, ns: str, name: str) -> dict | None:
    return OBJECTS.get((kind, ns, name))


def pod(volumes: list[dict], mounts: list[dict] | None = None) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"volumes": volumes, "containers": [{"name": "c", "volumeMounts": mounts or []}]},
        "status": {"podIP": "127.10.0.9"},
    }


def test_configmap_secret_emptydir_downward_projected(tmp_path: Path) -> None:
    tokens: list[tuple[str | None, int]] = []

    def token(audience: str | None, expiry: int) -> str:
        tokens.append((audience, expiry))
        return "TOKEN"

    spec = pod([
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "one", "configMap": {"name": "cfg", "items": [{"key": "a.txt", "path": "sub/x"}]}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}},
        {"name": "kube-api-access-x", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                                  "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
    ], [{"name": "kube-api-access-x", "mountPath": SERVICE_ACCOUNT_DIR},
        {"name": "one", "mountPath": "/etc/one", "subPath": "sub"}])
    vols = materialize_volumes(spec, tmp_path / "pod", lookup, token, workdir=tmp_path)
    paths = vols.paths
    assert (paths["cfg"] / "a.txt").read_text() == "A"
    assert (paths["cfg"] / "bin").read_bytes() == b"\x00\x01"
    assert (paths["one"] / "sub" / "x").read_text() == "A"
    assert not (paths["one"] / "b.txt").exists()
    assert (paths["sec"] / "pw").read_bytes() == b"s3cret"
    assert (paths["sec"] / "pw").stat().st_mode & 0o777 == 0o400
    assert paths["scratch"].is_dir()
    assert (paths["info"] / "ip").read_text() == "127.10.0.9"
    sa = paths["kube-api-access-x"]
    assert (sa / "token").read_text() == "TOKEN"
    assert (sa / "ca.crt").read_text() == "CA"
    assert (sa / "namespace").read_text() == "ns"
    assert tokens == [(None, 3607)]
    assert vols.token_volumes == ["kube-api-access-x"]
    assert vols.refresh_after is not None and vols.refresh_after < 3607
    assert paths["data"] == tmp_path / "pvc" / "ns" / "claim"

    mounts = container_mounts(spec["spec"]["containers"][0], vols)
    assert mounts == {SERVICE_ACCOUNT_DIR: str(sa), "/etc/one": str(paths["one"] / "sub")}
    assert service_account_dir(mounts) == str(sa)
    env = mount_env(mounts, spec["spec"]["containers"][0])
    assert json.loads(env["MLOPS_LOCAL_MOUNTS"]) == mounts
    assert env["MLOPS_LOCAL_MOUNT_ONE"] == str(paths["one"] / "sub")
    assert env["MLOPS_LOCAL_MOUNT_KUBE_API_ACCESS_X"] == str(sa)


def test_missing_configmap_is_an_error_unless_optional(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="not found"):
        materialize_volumes(pod([{"name": "v", "configMap": {"name": "gone"}}]), tmp_path,
                            lookup, lambda a, e: "", workdir=tmp_path)
    vols = materialize_volumes(pod([{"name": "v", "configMap": {"name": "gone",
                                                                "optional": True}}]),
                               tmp_path, lookup, lambda a, e: "", workdir=tmp_path)
    assert vols.paths["v"].is_dir()


def test_item_paths_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(VolumeError):
        materialize_volumes(
            pod([{"name": "v", "configMap": {"name": "cfg",
                                             "items": [{"key": "a.txt", "path": "../evil"}]}}]),
            tmp_path, lookup, lambda a, e: "", workdir=tmp_path)


def test_root_ca_falls_back_to_node_ca(tmp_path: Path) -> None:
    def no_root_ca(kind: str, ns: str, name: str) -> dict | None:
        return None

    spec = pod([{"name": "sa", "projected": {"sources": [
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    ]}}])
    vols = materialize_volumes(spec, tmp_path, no_root_ca, lambda a, e: "", workdir=tmp_path,
                               fallback_ca=b"NODE-CA")
    assert (vols.paths["sa"] / "ca.crt").read_text() == "NODE-CA"


def test_pod_kubeconfig_uses_token_file(tmp_path: Path) -> None:
    path = write_pod_kubeconfig(tmp_path / "k", server="https://127.0.0.1:6443",
                                token_file=tmp_path / "token", ca_file=tmp_path / "ca.crt",
                                namespace="ns")
    doc = yaml.safe_load(path.read_text())
    assert doc["users"][0]["user"] == {"tokenFile": str(tmp_path / "token")}
    assert doc["clusters"][0]["cluster"]["certificate-authority"] == str(tmp_path / "ca.crt")
    assert doc["contexts"][0]["context"]["namespace"] == "ns"
