"""Property-based API tests through the router: requests generated from the model server's
OpenAPI document (valid and invalid) go to a router (under uvicorn, on loopback) in front of
real model servers; no answer is a 5xx the router made itself. Only an upstream's own 5xx may
pass through (the router tags every forwarded answer with ``x-mlops-variant``; its own errors
have no such header)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from mlops_runtime.dataplane import DataPlane
from mlops_runtime.rest import create_app
from mlops_runtime.router.app import Router
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.settings import RuntimeSettings


@pytest.fixture(scope="module")
def api_schema(iris_loaded):  # noqa: ANN001, ANN201
    """The model server's OpenAPI document (the router forwards exactly that API)."""
    plane = DataPlane(RuntimeSettings(model_name="iris"))
    plane.install(iris_loaded)
    return schemathesis.openapi.from_dict(create_app(plane.settings, plane).openapi())


@pytest.fixture(scope="module")
def router_url(module_servers, tmp_path_factory, threaded_server) -> str:  # noqa: ANN001
    """A router splitting 50/50 (sticky on ``x-user``) between two real model servers serving
    iris, with a body limit below the servers' own (64 KiB)."""
    iris = module_servers["iris"].http
    second = module_servers["empty"].http  # a variant whose model is never ready: 503s
    config = tmp_path_factory.mktemp("router") / "router.json"
    config.write_text(json.dumps({"stickyHeader": "x-user", "variants": [
        {"name": "blue", "weight": 90, "endpoints": [f"http://{iris}"]},
        {"name": "green", "weight": 10, "endpoints": [f"http://{second}"]}]}))  # fmt: skip
    server = threaded_server(Router(RouterSettings(config=str(config), reload_interval_s=3600,
                                            discovery_interval_s=3600,
                                            max_request_bytes=64 * 1024)), lifespan="on")  # fmt: skip
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_of_the_routers_own_for_any_generated_request(api_schema, router_url,  # noqa: ANN001
                                                             mode: GenerationMode) -> None:  # fmt: skip
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert any(op.path == "/v2/models/{model_name}/infer" for op in operations)
    seen: dict[tuple[int, bool], int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def check(case) -> None:  # noqa: ANN001
            response = case.call(base_url=router_url, timeout=60)
            forwarded = "x-mlops-variant" in response.headers
            key = (response.status_code, forwarded)
            seen[key] = seen.get(key, 0) + 1
            assert response.status_code < 500 or forwarded, (
                case.method, case.path, case.headers, case.body, response.text)  # fmt: skip
            if response.status_code >= 400:
                assert "error" in response.json()

        try:
            check()
        except Unsatisfiable:  # nothing to negate (e.g. an operation without inputs)
            assert mode is GenerationMode.NEGATIVE
    assert sum(seen.values()) > 50
    if mode is GenerationMode.POSITIVE:
        assert seen.get((200, True)), seen  # answers came through the router
    else:
        assert any(400 <= code < 500 for code, _ in seen), seen
