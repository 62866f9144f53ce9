"""Container environment: ``$(VAR)`` expansion, envFrom/env order, downward API, references."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from mlops_localstack.node.envs import (
    EnvError,
    expand_argv,
    expand_vars,
    field_ref_value,
    parse_quantity,
    resolve_env,
    resource_field_value,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


POD = {
    "metadata": {"name": "p1", "namespace": "ns1", "uid": "u-1",
                 "labels": {"app": "web", "tier": "x"}, "annotations": {"a": "b"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "trainer"},
    "status": {"podIP": "127.10.0.7", "podIPs": [{"ip": "127.10.0.7"}], "hostIP": "127.0.0.1"},
}
OBJECTS = {
    ("configmaps", "ns1", "cfg"): {"kind": "ConfigMap", "data": {"A": "1", "B": "two",
                                                               "bad key": "z"}},
    ("secrets", "ns1", "sec"): {"kind": "Secret", "type": "Opaque",
                                "data": {"PASSWORD": b64("s3cret"), "B": b64("from-secret")}},
}


def lookup(kind: str, namespace: str, name: str) -> dict | None:
    return OBJECTS.get((kind, namespace, name))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x-$(A)-$(B)", "x-1-two"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("$", "$"),
        ("$$$(A)", "$1"),
        ("", ""),
    ],
)
def test_expand_vars_follows_kubernetes(text: str, expected: str) -> None:
    assert expand_vars(text, {"A": "1", "B": "two"}) == expected


def test_env_order_expansion_and_overrides() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}},
                    {"secretRef": {"name": "sec"}, "prefix": "S_"}],
        "env": [
            {"name": "A", "value": "override-$(A)"},
            {"name": "C", "value": "$(A)/$(S_PASSWORD)/$(LATER)"},
            {"name": "LATER", "value": "late"},
        ],
    }
    result = resolve_env(POD, container, lookup, base={"HOSTNAME": "p1"})
    env = result.env
    assert env["A"] == "override-1"  # env wins over envFrom, and sees the envFrom value
    assert env["B"] == "two"
    assert env["S_PASSWORD"] == "s3cret"
    assert env["S_B"] == "from-secret"
    assert env["C"] == "override-1/s3cret/$(LATER)"  # only earlier variables expand
    assert env["HOSTNAME"] == "p1"
    assert result.skipped == ["bad key"]


def test_value_from_field_secret_configmap() -> None:
    container = {"env": [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
        {"name": "CB", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
        {"name": "URL", "value": "http://$(POD_IP):8080"},
    ]}
    env = resolve_env(POD, container, lookup).env
    assert env["POD_IP"] == "127.10.0.7"
    assert env["NAME"] == "p1"
    assert env["NS"] == "ns1"
    assert env["APP"] == "web"
    assert env["SA"] == "trainer"
    assert env["PW"] == "s3cret"
    assert env["CB"] == "two"
    assert env["URL"] == "http://127.10.0.7:8080"


def test_missing_references_fail_unless_optional() -> None:
    missing_key = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "NOPE"}}}]}
    with pytest.raises(EnvError, match="couldn't find key NOPE"):
        resolve_env(POD, missing_key, lookup)
    missing_obj = {"envFrom": [{"configMapRef": {"name": "gone"}}]}
    with pytest.raises(EnvError, match='configmap "gone" not found'):
        resolve_env(POD, missing_obj, lookup)
    optional = {
        "envFrom": [{"configMapRef": {"name": "gone", "optional": True}}],
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE",
                                                                  "optional": True}}}],
    }
    assert "X" not in resolve_env(POD, optional, lookup).env


def test_field_refs() -> None:
    assert field_ref_value(POD, "metadata.uid") == "u-1"
    assert field_ref_value(POD, "spec.nodeName") == "n1"
    assert field_ref_value(POD, "status.hostIP") == "127.0.0.1"
    assert field_ref_value(POD, "status.podIPs") == "127.10.0.7"
    assert field_ref_value(POD, "metadata.annotations['a']") == "b"
    assert field_ref_value(POD, "metadata.labels") == 'app="web"\ntier="x"'
    with pytest.raises(EnvError):
        field_ref_value(POD, "spec.containers")


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)), ("1k", Decimal(1000)),
     ("1e3", Decimal(1000)), (3, Decimal(3))],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_quantity("12XB")


def test_resource_field_ref() -> None:
    container = {"resources": {"limits": {"cpu": "1500m", "memory": "1Gi"},
                               "requests": {"cpu": "250m"}}}
    alloc = {"cpu": "8", "memory": "16Gi"}
    assert resource_field_value(container, "limits.cpu", None, alloc) == "2"  # rounded up
    assert resource_field_value(container, "limits.cpu", "1m", alloc) == "1500"
    assert resource_field_value(container, "requests.cpu", "1m", alloc) == "250"
    assert resource_field_value(container, "limits.memory", "1Mi", alloc) == "1024"
    assert resource_field_value({}, "limits.cpu", None, alloc) == "8"  # node allocatable
    env = resolve_env(POD, {"env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {
        "resource": "limits.cpu", "divisor": "1m"}}}], **container}, lookup,
        allocatable=alloc).env
    assert env["CPU"] == "1500"


def test_expand_argv() -> None:
    assert expand_argv(["--bind", "$(POD_IP)", "$$(X)"], {"POD_IP": "127.1.2.3"}) == [
        "--bind", "127.1.2.3", "$(X)"]
