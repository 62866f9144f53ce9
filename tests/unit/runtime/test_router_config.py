"""Router config parsing and EndpointSlice endpoint extraction."""

from __future__ import annotations

import pytest

from mlops_runtime.router.config import dump_config, parse_config
from mlops_runtime.router.discovery import endpoints_from_slices

GOOD = """
stickyHeader: X-User-Id
namespace: models
variants:
  - {name: champion, weight: 90, service: iris-champion, port: http}
  - {name: challenger, weight: 10, endpoints: ["http://127.0.0.1:9001"]}
mirror: {name: shadow, endpoints: ["http://127.0.0.2:9002"]}
"""


def test_parse_good_config_and_round_trip() -> None:
    config = parse_config(GOOD)
    assert config.weights == {"champion": 90, "challenger": 10}
    assert config.sticky_header == "x-user-id"
    assert config.mirror is not None and config.mirror.name == "shadow"
    assert parse_config(dump_config(config)) == config


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a", "mapping"),
        ("variants: []", "at least 1"),
        ("variants: [{name: a, weight: 0, endpoints: ['http://h:1']}]", "positive weight"),
        ("variants: [{name: a, weight: 1}]", "exactly one of"),
        ("variants: [{name: a, weight: 1, service: s, endpoints: ['http://h:1']}]", "exactly one"),
        ("variants: [{name: a, weight: 1, endpoints: ['h:1']}]", "http://host:port"),
        ("variants: [{name: a, weight: -1, service: s}]", "greater than or equal"),
        (
            "variants: [{name: a, weight: 1, service: s}, {name: a, weight: 1, service: t}]",
            "unique",
        ),
        ("variants: [{name: a, weight: 1, service: s, colour: red}]", "Extra inputs"),
        ("variants: [", "YAML"),
    ],
)
def test_bad_configs_are_rejected(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_config(text)


def _slice(ready_flags: list[bool | None], ports: list[dict], family: str = "IPv4") -> dict:
    return {
        "addressType": family,
        "ports": ports,
        "endpoints": [
            {"addresses": [f"127.0.1.{i + 1}"], "conditions": {"ready": r}}
            for i, r in enumerate(ready_flags)
        ],
    }


def test_only_ready_endpoints_with_the_right_port() -> None:
    slices = [
        _slice([True, False, None], [{"name": "http", "port": 8080}, {"name": "x", "port": 9}]),
        _slice([True], [{"name": "http", "port": 8080}]),  # duplicate address, deduplicated
    ]
    assert endpoints_from_slices(slices) == ["http://127.0.1.1:8080"]
    assert endpoints_from_slices(slices, "x") == ["http://127.0.1.1:9"]
    assert endpoints_from_slices(slices, 7000) == ["http://127.0.1.1:7000"]
    assert endpoints_from_slices(slices, "missing") == []
    assert endpoints_from_slices([_slice([True], [{"port": 1}], "IPv6")]) == [
        "http://[127.0.1.1]:1"
    ]


def test_client_objects_work_too() -> None:
    from kubernetes.client import DiscoveryV1EndpointPort as Port
    from kubernetes.client import (
        V1Endpoint,
        V1EndpointConditions,
        V1EndpointSlice,
        V1ObjectMeta,
    )

    item = V1EndpointSlice(
        address_type="IPv4", metadata=V1ObjectMeta(name="s"),
        ports=[Port(name="http", port=8080)],
        endpoints=[V1Endpoint(addresses=["127.0.2.1"], conditions=V1EndpointConditions(ready=True)),
                   V1Endpoint(addresses=["127.0.2.2"], conditions=V1EndpointConditions(ready=False))],
    )  # fmt: skip
    assert endpoints_from_slices([item]) == ["http://127.0.2.1:8080"]


class _FakeCoreApi:
    """Answers read_namespaced_config_map like the Kubernetes client."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.reads: list[tuple[str, str]] = []

    def read_namespaced_config_map(self, name: str, namespace: str, **_: object) -> object:
        from kubernetes.client import V1ConfigMap

        self.reads.append((namespace, name))
        return V1ConfigMap(data=dict(self.data))


def test_configmap_source_reports_only_changes() -> None:
    from mlops_runtime.router.app import ConfigSource
    from mlops_runtime.router.settings import RouterSettings

    api = _FakeCoreApi({"router.yaml": GOOD})
    source = ConfigSource(RouterSettings(configmap="models/iris-router"), "default", api)
    assert parse_config(source.poll()).weights == {"champion": 90, "challenger": 10}
    assert source.poll() is None  # unchanged
    api.data["router.yaml"] = GOOD.replace("weight: 90", "weight: 50")
    assert parse_config(source.poll()).weights["champion"] == 50
    assert api.reads[0] == ("models", "iris-router")
    api.data = {}
    with pytest.raises(KeyError):
        source.poll()


def test_pod_fallback_uses_ready_pods_and_named_target_ports() -> None:
    from mlops_runtime.router.discovery import endpoints_from_pods

    service = {"spec": {"ports": [{"name": "http", "port": 80, "target_port": "web"}]}}

    def pod(ip: str, ready: str, deleting: bool = False) -> dict:
        return {"metadata": {"deletion_timestamp": "now" if deleting else None},
                "spec": {"containers": [{"ports": [{"name": "web", "container_port": 8080}]}]},
                "status": {"pod_ip": ip, "conditions": [{"type": "Ready", "status": ready}]}}  # fmt: skip

    pods = [pod("127.10.0.2", "True"), pod("127.10.0.3", "False"),
            pod("127.10.0.4", "True", deleting=True), pod("", "True")]  # fmt: skip
    assert endpoints_from_pods(service, pods) == ["http://127.10.0.2:8080"]
    assert endpoints_from_pods(service, pods, 9000) == ["http://127.10.0.2:9000"]
    numeric = {"spec": {"ports": [{"name": "http", "port": 80, "target_port": "8081"}]}}
    assert endpoints_from_pods(numeric, pods) == ["http://127.10.0.2:8081"]
    assert endpoints_from_pods({"spec": {"ports": []}}, pods) == []
