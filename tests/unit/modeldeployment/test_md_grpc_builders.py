"""The model server's gRPC port in a ModelDeployment's children: container port, env, probe,
Services; the router (HTTP only) has none; ``runtime.port`` cannot take the gRPC port."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlops_operator.api import ModelDeploymentSpec
from mlops_operator.api.modeldeployment import GRPC_PORT
from mlops_operator.builders.modeldeployment import (
    RESERVED_ENV,
    build_variant_deployment,
    build_variant_service,
)
from mlops_operator.builders.router import build_router_deployment, build_router_service
from mlops_operator.builders.serving import build_children
from mlops_operator.builders.traffic import build_service_mode_service
from mlops_runtime.settings import RuntimeSettings


def spec(port: int = 8080, env: list[dict[str, Any]] | None = None,
         router: str = "builtin") -> ModelDeploymentSpec:
    runtime: dict[str, Any] = {"port": port}
    if env is not None:
        runtime["env"] = env
    return ModelDeploymentSpec.model_validate({
        "model": "iris",
        "runtime": runtime,
        "traffic": {"router": router},
        "variants": [{"name": "champion", "modelUri": "models:/iris@champion", "weight": 100}],
    })


def server(s: ModelDeploymentSpec, role: str = "stable") -> dict[str, Any]:
    dep = build_variant_deployment("iris", "ml", "uid", s, "champion", "3", role=role,  # type: ignore[arg-type]
                                   tracking_uri="http://mlflow:5000", default_image="img:1")
    return dep["spec"]["template"]["spec"]["containers"][0]


def ports_by_name(obj: dict[str, Any], key: str = "containerPort") -> dict[str, int]:
    return {p["name"]: p[key] for p in obj["ports"]}


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("role", ["stable", "canary"])
@pytest.mark.parametrize("http_port", [8080, 9000, 8082])
def test_probe_container_port_env_and_service_agree_on_the_grpc_port(
    role: str, http_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = spec(http_port)
    container = server(s, role)
    assert ports_by_name(container) == {"http": http_port, "grpc": GRPC_PORT}
    assert container["readinessProbe"]["grpc"] == {"port": GRPC_PORT, "service": ""}
    assert "httpGet" not in container["readinessProbe"]
    # liveness stays HTTP: the other transport is probed too
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # the runtime, given exactly this env, listens where the probe and the Service point
    for name, value in plain_env(container).items():
        monkeypatch.setenv(name, value)
    settings = RuntimeSettings()
    assert (settings.port, settings.grpc_port) == (http_port, GRPC_PORT)
    svc = build_variant_service("iris", "ml", "uid", s, "champion", role)  # type: ignore[arg-type]
    grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port == {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc",
                         "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}
    assert grpc_port["targetPort"] in ports_by_name(container)


def test_users_cannot_move_the_grpc_port_away_from_its_probe_and_service() -> None:
    assert "MLOPS_RUNTIME_GRPC_PORT" in RESERVED_ENV
    container = server(spec(env=[{"name": "MLOPS_RUNTIME_GRPC_PORT", "value": "0"},
                                 {"name": "MLOPS_RUNTIME_LOG_LEVEL", "value": "debug"}]))
    env = [e for e in container["env"] if e["name"] == "MLOPS_RUNTIME_GRPC_PORT"]
    assert env == [{"name": "MLOPS_RUNTIME_GRPC_PORT", "value": str(GRPC_PORT)}]
    assert plain_env(container)["MLOPS_RUNTIME_LOG_LEVEL"] == "debug"  # others still pass


def test_http_port_equal_to_the_grpc_port_is_refused() -> None:
    with pytest.raises(ValidationError, match="port 8081 is the model server's gRPC port"):
        spec(GRPC_PORT)


def test_the_router_serves_http_only() -> None:
    s = spec()
    router = build_router_deployment("iris", "ml", "uid", s, default_image="img:1")
    container = router["spec"]["template"]["spec"]["containers"][0]
    assert ports_by_name(container) == {"http": 8080}
    assert container["readinessProbe"]["httpGet"]["path"] == "/router/ready"
    assert "MLOPS_RUNTIME_GRPC_PORT" not in plain_env(container)
    assert ports_by_name(build_router_service("iris", "ml", "uid", s)["spec"], "port") == {
        "http": 8080}


def test_the_service_mode_entry_service_exposes_grpc_over_every_server() -> None:
    svc = build_service_mode_service("iris", "ml", "uid", spec(router="service"))
    assert ports_by_name(svc["spec"], "port") == {"http": 8080, "grpc": GRPC_PORT}


@pytest.mark.parametrize("router", ["builtin", "gateway-api", "service"])
def test_every_model_server_service_of_the_children_has_a_grpc_port(router: str) -> None:
    s = spec(router=router)
    children = build_children("iris", "ml", "uid", s, {"champion": "3"}, ("champion", "4", 10),
                              tracking_uri="http://mlflow:5000", default_image="img:1")
    servers = {c["metadata"]["name"] for c in children if c["kind"] == "Deployment"
               and c["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"}
    assert servers == {"iris-champion", "iris-champion-canary"}
    for c in children:
        if c["kind"] != "Service":
            continue
        names = set(ports_by_name(c["spec"], "port"))
        to_servers = c["spec"]["selector"].get("app.kubernetes.io/component") == "model-server"
        assert names == ({"http", "grpc"} if to_servers else {"http"}), c["metadata"]["name"]


GRPC_GATEWAY = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public",
                 "sectionName": "grpc"}]


@pytest.mark.parametrize("router", ["builtin", "gateway-api", "service"])
def test_a_grpcroute_only_in_gateway_api_mode_with_grpc_gateways(router: str) -> None:
    s = spec(router=router)

    def grpc_routes(**refs: Any) -> list[dict[str, Any]]:
        children = build_children("iris", "ml", "uid", s, {"champion": "3"},
                                  ("champion", "4", 10), tracking_uri="http://mlflow:5000",
                                  default_image="img:1", **refs)
        return [c for c in children if c["kind"] == "GRPCRoute"]

    assert grpc_routes() == []  # no Gateways named for gRPC: none
    routes = grpc_routes(grpc_parent_refs=GRPC_GATEWAY)
    if router != "gateway-api":
        assert routes == []
        return
    (route,) = routes
    assert route["metadata"]["name"] == "iris" and route["spec"]["parentRefs"] == GRPC_GATEWAY
    (rule,) = route["spec"]["rules"]
    assert "matches" not in rule  # every service and method
    # the canary's step applies to its variant's share, as in the HTTPRoute
    assert {(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]} == {
        ("iris-champion", GRPC_PORT, 90), ("iris-champion-canary", GRPC_PORT, 10)}
