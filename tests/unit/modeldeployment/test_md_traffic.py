"""Traffic: the weight split, the router's ConfigMap, the HTTPRoute, service mode, status.url."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from test_md_builders import example_spec

from mlops_operator.builders.modeldeployment import build_variant_deployment
from mlops_operator.builders.router import (
    build_router_configmap,
    router_config,
)
from mlops_operator.builders.traffic import (
    Backend,
    build_http_route,
    build_service_mode_service,
    effective_weights,
    parse_parent_refs,
    replica_split,
    spec_weights,
    status_url,
    traffic_limitations,
    traffic_summary,
)
from mlops_runtime.router.config import parse_config

CHAMPION, CHALLENGER = Backend("champion"), Backend("challenger")
CANARY = Backend("champion", "canary")
GW = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]


# -- effective_weights -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variants", "canary", "expected"),
    [
        ({"champion": 90, "challenger": 10}, None, {CHAMPION: 90, CHALLENGER: 10}),
        ({"champion": 100}, ("champion", 10), {CHAMPION: 90, CANARY: 10}),  # Argo's setWeight
        ({"champion": 100}, ("champion", 100), {CHAMPION: 0, CANARY: 100}),
        ({"champion": 100}, ("champion", 0), {CHAMPION: 100, CANARY: 0}),
        (
            {"champion": 90, "challenger": 10},
            ("champion", 50),
            {CHAMPION: 45, CANARY: 45, CHALLENGER: 10},  # the challenger keeps its 10
        ),
        (
            {"champion": 90, "challenger": 10},
            ("champion", 10),
            {CHAMPION: 81, CANARY: 9, CHALLENGER: 10},
        ),
        (
            {"champion": 90, "challenger": 10},
            ("challenger", 5),  # 0.5 rounds up; a positive step never gets 0
            {CHAMPION: 90, CHALLENGER: 9, Backend("challenger", "canary"): 1},
        ),
        (
            {"champion": 98, "challenger": 2},
            ("challenger", 99),  # the stable pods keep at least 1 below step 100
            {CHAMPION: 98, CHALLENGER: 1, Backend("challenger", "canary"): 1},
        ),
        ({"a": 1, "b": 1, "c": 1}, None, {Backend("a"): 34, Backend("b"): 33, Backend("c"): 33}),
        (
            {"a": 0, "b": 100},
            ("a", 50),
            {Backend("a"): 0, Backend("a", "canary"): 0, Backend("b"): 100},
        ),
    ],
)
def test_effective_weights(
    variants: dict[str, int], canary: tuple[str, int] | None, expected: dict[Backend, int]
) -> None:
    assert effective_weights(variants, canary) == expected


def test_basis_points_make_the_canary_share_exact() -> None:
    weights = effective_weights({"champion": 90, "challenger": 10}, ("challenger", 25), 10000)
    assert weights[Backend("challenger", "canary")] == 250
    assert weights[CHALLENGER] == 750 and weights[CHAMPION] == 9000


@pytest.mark.parametrize(
    ("variants", "canary", "error"),
    [
        ({}, None, "positive sum"),
        ({"a": 0}, None, "positive sum"),
        ({"a": -1, "b": 101}, None, "non-negative"),
        ({"a": 100}, ("b", 10), "unknown variant"),
        ({"a": 100}, ("a", 101), "between 0 and 100"),
    ],
)
def test_effective_weights_refuses_nonsense(
    variants: dict[str, int], canary: tuple[str, int] | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        effective_weights(variants, canary)


@st.composite
def splits(draw: st.DrawFn) -> tuple[dict[str, int], tuple[str, int] | None]:
    n = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, 100]
    variants = {f"v{i}": bounds[i + 1] - bounds[i] for i in range(n)}
    canary = draw(st.none() | st.tuples(st.sampled_from(sorted(variants)), st.integers(0, 100)))
    return variants, canary


@given(splits())
def test_weights_sum_to_100_are_non_negative_and_other_variants_are_untouched(
    split: tuple[dict[str, int], tuple[str, int] | None],
) -> None:
    variants, canary = split
    weights = effective_weights(variants, canary)
    assert sum(weights.values()) == 100
    assert all(w >= 0 for w in weights.values())
    for name, weight in variants.items():
        if canary is None or name != canary[0]:
            assert weights[Backend(name)] == weight
    if canary is not None:
        name, step = canary
        total = weights[Backend(name)] + weights[Backend(name, "canary")]
        assert total == variants[name]  # the canary only ever takes its own variant's share


@given(splits())
def test_canary_share_is_exact_up_to_rounding(
    split: tuple[dict[str, int], tuple[str, int] | None],
) -> None:
    variants, canary = split
    assume(canary is not None)
    name, step = canary  # type: ignore[misc]
    share = variants[name]
    part = effective_weights(variants, canary)[Backend(name, "canary")]
    assert abs(part - share * step / 100) < 1
    if share * step % 100 == 0:
        assert part == share * step // 100
    if step > 0 and share > 0:
        assert part >= 1  # never starved: analysis needs its traffic
    exact = effective_weights(variants, canary, total=10000)[Backend(name, "canary")]
    if step > 0 and share > 0:
        assert exact == share * step  # in basis points: exact


def test_traffic_summary() -> None:
    weights = effective_weights({"champion": 90, "challenger": 10}, ("champion", 10))
    assert traffic_summary(weights) == "champion=81 champion-canary=9 challenger=10"


# -- builtin: router config --------------------------------------------------------------------


def test_router_configmap_is_exactly_what_the_router_parses() -> None:
    spec = example_spec(traffic={"mirror": {"variant": "challenger", "percent": 100}})
    weights = effective_weights(spec_weights(spec), ("champion", 10))
    cm = build_router_configmap("iris", "ml", "uid-1", spec, weights)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "iris-router"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    config = parse_config(cm["data"]["router.yaml"])  # the runtime's own parser
    assert config.weights == {"champion": 81, "champion-canary": 9, "challenger": 10}
    assert config.sticky_header == "x-user-id"
    assert config.namespace == "ml"
    services = {v.name: (v.service, v.port) for v in config.variants}
    assert services == {
        "champion": ("iris-champion", "http"),
        "champion-canary": ("iris-champion-canary", "http"),
        "challenger": ("iris-challenger", "http"),
    }
    assert config.mirror is not None
    assert (config.mirror.name, config.mirror.service) == ("challenger", "iris-challenger")


def test_router_config_services_match_the_variant_deployments() -> None:
    spec = example_spec()
    weights = effective_weights(spec_weights(spec), ("challenger", 50))
    doc = router_config("iris", "ml", spec, weights)
    for upstream in doc["variants"]:
        variant, _, canary = upstream["name"].partition("-")
        dep = build_variant_deployment(
            "iris", "ml", "u", spec, variant, "1", tracking_uri="t", default_image="i",
            role="canary" if canary else "stable",
        )  # fmt: skip
        assert upstream["service"] == dep["metadata"]["name"]


@pytest.mark.parametrize(
    ("traffic", "sticky", "mirror"),
    [
        ({"stickyHeader": None}, None, None),
        ({"stickyHeader": "X-Session"}, "x-session", None),
        ({"mirror": {"variant": "champion", "percent": 0}}, "x-user-id", None),
        ({"mirror": {"variant": "champion", "percent": 30}}, "x-user-id", "champion"),
    ],
)
def test_router_config_sticky_and_mirror(
    traffic: dict[str, Any], sticky: str | None, mirror: str | None
) -> None:
    spec = example_spec(traffic=traffic)
    config = parse_config(
        yaml.safe_dump(router_config("iris", "ml", spec, effective_weights(spec_weights(spec))))
    )
    assert config.sticky_header == sticky
    assert (config.mirror.name if config.mirror else None) == mirror


# -- gateway-api -------------------------------------------------------------------------------


def test_http_route_weights_and_mirror() -> None:
    spec = example_spec(
        traffic={"router": "gateway-api", "mirror": {"variant": "challenger", "percent": 20}}
    )
    weights = effective_weights(spec_weights(spec), ("champion", 50))
    route = build_http_route("iris", "ml", "uid-1", spec, weights, GW, hostnames=["iris.example"])
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["kind"] == "HTTPRoute" and route["metadata"]["name"] == "iris"
    assert route["spec"]["parentRefs"] == GW
    assert route["spec"]["hostnames"] == ["iris.example"]
    (rule,) = route["spec"]["rules"]
    assert {(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]} == {
        ("iris-champion", 8080, 45),
        ("iris-champion-canary", 8080, 45),
        ("iris-challenger", 8080, 10),
    }
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {
                    "group": "",
                    "kind": "Service",
                    "name": "iris-challenger",
                    "port": 8080,
                },
                "percent": 20,
            },
        }
    ]


def test_http_route_without_mirror_or_hostnames() -> None:
    spec = example_spec(traffic={"router": "gateway-api"})
    route = build_http_route("iris", "ml", "u", spec, effective_weights(spec_weights(spec)), GW)
    assert "hostnames" not in route["spec"]
    assert "filters" not in route["spec"]["rules"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gw", [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]),
        (
            "infra/public:https, internal",
            [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "public",
                    "namespace": "infra",
                    "sectionName": "https",
                },
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal"},
            ],
        ),
        ('[{"name": "gw", "port": 443}]', [{"name": "gw", "port": 443}]),
    ],
)
def test_parse_parent_refs(text: str, expected: list[dict[str, Any]]) -> None:
    assert parse_parent_refs(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "a/b/c", "gw:a:b", '[{"port": 1}]', '["gw"]'])
def test_parse_parent_refs_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_parent_refs(text)


# -- service mode ------------------------------------------------------------------------------


def test_service_mode_selects_every_model_server_but_not_the_router() -> None:
    spec = example_spec(traffic={"router": "service"})
    svc = build_service_mode_service("iris", "ml", "uid-1", spec)
    assert svc["metadata"]["name"] == "iris"
    selector = svc["spec"]["selector"]
    assert selector == {
        "mlops.dev/deployment": "iris",
        "app.kubernetes.io/component": "model-server",
    }
    for variant in ("champion", "challenger"):
        for role in ("stable", "canary"):
            dep = build_variant_deployment(
                "iris", "ml", "u", spec, variant, "1", tracking_uri="t", default_image="i",
                role=role,  # type: ignore[arg-type]
            )  # fmt: skip
            assert dep["spec"]["template"]["metadata"]["labels"].items() >= selector.items()


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ({CHAMPION: 2, CHALLENGER: 1}, {CHAMPION: 67, CHALLENGER: 33}),
        ({CHAMPION: 0, CHALLENGER: 0}, {CHAMPION: 0, CHALLENGER: 0}),
        ({CHAMPION: 3, CANARY: 1}, {CHAMPION: 75, CANARY: 25}),
    ],
)
def test_replica_split_is_what_service_mode_really_does(
    replicas: dict[Backend, int], expected: dict[Backend, int]
) -> None:
    assert replica_split(replicas) == expected


# -- status.url and limitations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("router", "gateway", "url"),
    [
        ("builtin", None, "http://iris.ml.svc:8080"),
        ("service", None, "http://iris.ml.svc:8080"),
        ("gateway-api", None, None),
        ("gateway-api", "10.0.0.7", "http://10.0.0.7"),
    ],
)
def test_status_url(router: str, gateway: str | None, url: str | None) -> None:
    spec = example_spec(traffic={"router": router})
    assert status_url("iris", "ml", spec, gateway_address=gateway) == url


@pytest.mark.parametrize(
    ("traffic", "count"),
    [
        ({"router": "builtin"}, 0),
        ({"router": "builtin", "mirror": {"variant": "champion", "percent": 50}}, 1),
        ({"router": "builtin", "mirror": {"variant": "champion", "percent": 100}}, 0),
        ({"router": "gateway-api"}, 1),  # the example's stickyHeader
        ({"router": "gateway-api", "stickyHeader": None}, 0),
        ({"router": "service", "mirror": {"variant": "champion"}}, 3),
    ],
)
def test_traffic_limitations(traffic: dict[str, Any], count: int) -> None:
    assert len(traffic_limitations(example_spec(traffic=traffic))) == count
