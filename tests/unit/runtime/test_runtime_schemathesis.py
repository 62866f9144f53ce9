"""Property-based API tests from the app's own OpenAPI document: no input yields a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from mlops_runtime.dataplane import DataPlane
from mlops_runtime.model import load_model
from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings


@pytest.fixture(scope="module")
def api_schema(iris_model_dir):  # noqa: ANN001, ANN201
    config = RuntimeSettings(model_uri=str(iris_model_dir), model_name="iris",
                             max_request_bytes=64 * 1024)  # fmt: skip
    plane = DataPlane(config)
    plane.install(load_model(str(iris_model_dir), "iris"))
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(config, plane))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_for_any_generated_request(api_schema, mode: GenerationMode) -> None:  # noqa: ANN001
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert any(op.path == "/v2/models/{model_name}/infer" for op in operations)
    seen: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def check(case) -> None:  # noqa: ANN001
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)
            if response.status_code >= 400:
                assert "error" in response.json()

        try:
            check()
        except Unsatisfiable:  # nothing to negate (e.g. an operation without inputs)
            assert mode is GenerationMode.NEGATIVE
    assert sum(seen.values()) > 50
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= code < 500 for code in seen)
