"""Client mistakes are 4xx with an OIP ``{"error": ...}`` body; a broken model is not-ready."""

from __future__ import annotations

import json

import pytest

VALID = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}


def _with(**changes: object) -> str:
    return json.dumps({"inputs": [{**VALID, **changes}]})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{", "malformed JSON"),
        ("[]", "must be a JSON object"),
        ('{"inputs": []}', "non-empty list"),
        ('{"inputs": [1]}', "must be an object"),
        (_with(shape=[2, 4]), "needs 8 elements"),
        (_with(shape=[1, 3], data=[1, 2, 3]), "expects 4 features"),
        (_with(shape=[1, 2, 2]), "2-D"),
        (_with(shape="1,4"), "'shape'"),
        (_with(shape=[1, -4]), "non-negative"),
        (_with(datatype="FP128"), "unknown datatype"),
        (_with(datatype="BYTES", data=["a", "b", "c", "d"]), "expects numbers"),
        (_with(data=["a", "b", "c", "d"]), "does not match datatype"),
        (_with(data=[[1, 2], [3]]), "does not match datatype"),
        (_with(data=[1, 2, 3, None]), "NaN"),
        (_with(datatype="UINT8", data=[1, 2, 3, 300]), "does not match datatype"),
        (_with(name=5), "'name'"),
        (_with(data="1234"), "'data'"),
        (json.dumps({"inputs": [VALID], "outputs": [{"name": "explain"}]}), "unknown outputs"),
        (json.dumps({"inputs": [VALID], "id": 7}), "'id'"),
    ],
)
def test_bad_infer_bodies_are_400(client, body: str, fragment: str) -> None:  # noqa: ANN001
    r = client.post("/v2/models/iris/infer", content=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}
    assert fragment in r.json()["error"]


@pytest.mark.parametrize(
    "body",
    ["{", '{"instances": []}', '{"instances": [[1, 2]]}', '{"instances": [[1,2,3,4], {"a": 1}]}',
     '{"instances": [{"a": 1}]}', '{"rows": [[1, 2, 3, 4]]}'],
)  # fmt: skip
def test_bad_predict_bodies_are_400(client, body: str) -> None:  # noqa: ANN001
    r = client.post("/predict", content=body)
    assert r.status_code == 400
    assert "error" in r.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v2/models/nope"),
        ("get", "/v2/models/nope/ready"),
        ("get", "/v2/models/iris/versions/7"),
        ("get", "/v2/models/iris/versions/7/ready"),
        ("post", "/v2/models/nope/infer"),
        ("post", "/v2/models/iris/versions/7/infer"),
        ("get", "/no/such/route"),
    ],
)
def test_unknown_model_version_or_route_is_404(client, method: str, path: str) -> None:  # noqa: ANN001
    r = getattr(client, method)(path, **({"content": _with()} if method == "post" else {}))
    assert r.status_code == 404
    assert "error" in r.json()


def test_wrong_method_is_405_with_error_body(client) -> None:  # noqa: ANN001
    r = client.get("/v2/models/iris/infer")
    assert r.status_code == 405 and "error" in r.json()


def test_payload_over_the_limit_is_413(make_client, wait_ready) -> None:  # noqa: ANN001
    small = make_client(max_request_bytes=100)
    wait_ready(small)
    assert small.post("/v2/models/iris/infer", content=_with()).status_code == 200
    big = json.dumps({"inputs": [{**VALID, "shape": [10, 4], "data": [1.5] * 40}]})
    r = small.post("/v2/models/iris/infer", content=big)
    assert r.status_code == 413 and "limit of 100 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit applies while streaming
        yield big.encode()

    r = small.post("/v2/models/iris/infer", content=chunks())
    assert r.status_code == 413
    r = small.post("/predict", content=big)  # the FastAPI route reads with the same reader
    assert r.status_code == 413 and "limit of 100 bytes" in r.json()["error"]
    assert small.post("/predict", content=chunks()).status_code == 413


def test_a_model_that_fails_to_load_is_not_ready(tmp_path, scrape) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from mlops_runtime.rest import create_app
    from mlops_runtime.settings import RuntimeSettings

    settings = RuntimeSettings(model_uri=str(tmp_path / "missing"), model_name="iris",
                               load_retries=1)  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as c:
        plane = app.state.plane
        for _ in range(200):  # the load runs in the background; wait for its outcome
            if plane.load_error:
                break
            c.get("/v2/health/live")
        assert c.get("/v2/health/live").status_code == 200
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and "not an MLflow model directory" in ready.json()["error"]
        meta = c.get("/v2/models/iris").json()
        assert meta["parameters"]["ready"] is False
        assert "not an MLflow model directory" in meta["parameters"]["reason"]
        assert c.get("/v2/models/iris/ready").status_code == 503
        r = c.post("/v2/models/iris/infer", content=_with())
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        ready = scrape(c.get("/metrics").text).series("mlops_runtime_model_ready")
        assert [s.value for s in ready] == [0.0]


def test_a_bug_in_the_model_is_a_500_with_an_error_body(client, monkeypatch) -> None:  # noqa: ANN001
    plane = client.app.state.plane

    def broken(rows):  # noqa: ANN001, ANN202
        raise RuntimeError("boom")

    monkeypatch.setitem(plane.model.methods, "predict", broken)
    r = client.post("/v2/models/iris/infer", content=_with())
    assert r.status_code == 500 and "boom" in r.json()["error"]
    r = client.post("/predict", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 500 and "boom" in r.json()["error"]


def test_a_shape_too_large_to_lay_out_is_a_400_even_with_a_zero_dimension() -> None:
    """Found by the fuzz tests: [0, 2**31, 2**40] has no elements, but numpy cannot build it."""
    import pytest

    from mlops_runtime.codec import check_shape
    from mlops_runtime.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="larger than any request can carry"):
        check_shape("input 'x'", [0, 2**31, 2**40])
    assert check_shape("input 'x'", [0, 4]) == (0, 4)
