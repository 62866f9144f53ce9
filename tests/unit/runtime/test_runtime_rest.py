"""HTTP tests of every model-server endpoint on the happy path."""

from __future__ import annotations

import numpy as np


def test_health_and_server_metadata(client) -> None:  # noqa: ANN001
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "mlops-runtime" and meta["version"]


def test_model_metadata_from_signature(client) -> None:  # noqa: ANN001
    meta = client.get("/v2/models/iris").json()
    assert meta["name"] == "iris"
    assert meta["platform"] == "mlflow-sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["predict"] == {"name": "predict", "datatype": "INT64", "shape": [-1]}
    assert outputs["predict_proba"]["shape"] == [-1, 3]
    assert meta["parameters"]["ready"] is True


def test_model_ready(client) -> None:  # noqa: ANN001
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}


def test_infer_matches_the_model(client, iris, infer_body) -> None:  # noqa: ANN001
    X, y, _ = iris
    rows = X[[0, 60, 120]].tolist()
    r = client.post("/v2/models/iris/infer", content=infer_body(rows, id="req-1"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "iris" and out["id"] == "req-1"
    [predict] = out["outputs"]
    assert predict["name"] == "predict" and predict["datatype"] == "INT64"
    assert predict["shape"] == [3]
    assert predict["data"] == y[[0, 60, 120]].tolist()


def test_infer_fp32_and_predict_proba(client, iris, infer_body) -> None:  # noqa: ANN001
    X, _, _ = iris
    body = infer_body(X[:2].tolist(), datatype="FP32",
                      outputs=[{"name": "predict_proba"}, {"name": "predict"}])  # fmt: skip
    out = client.post("/v2/models/iris/infer", content=body).json()
    proba, predict = out["outputs"]
    assert proba["shape"] == [2, 3]
    assert np.allclose(np.asarray(proba["data"]).reshape(2, 3).sum(axis=1), 1.0)
    assert predict["data"] == [0, 0]


def test_infer_one_tensor_per_feature(client, iris) -> None:  # noqa: ANN001
    X, y, names = iris
    inputs = [{"name": n, "shape": [2], "datatype": "FP64", "data": X[[0, 149], i].tolist()}
              for i, n in enumerate(names)]  # fmt: skip
    # the saved signature is a tensor spec (no names), so per-feature inputs are refused...
    r = client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert r.status_code == 400
    # ...while a nested [N, F] tensor is accepted
    nested = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64",
                          "data": X[[0, 149]].tolist()}]}  # fmt: skip
    assert client.post("/v2/models/iris/infer", json=nested).json()["outputs"][0]["data"] == [
        y[0],
        y[149],
    ]


def test_infer_by_version_route(client, infer_body) -> None:  # noqa: ANN001
    # a local model directory has no registry version: any version is unknown
    r = client.post("/v2/models/iris/versions/1/infer", content=infer_body([[1, 2, 3, 4]]))
    assert r.status_code == 404


def test_predict_instances(client, iris) -> None:  # noqa: ANN001
    X, y, names = iris
    r = client.post("/predict", json={"instances": X[[0, 149]].tolist()})
    assert r.status_code == 200
    assert r.json()["predictions"] == [y[0], y[149]]


def test_metrics_count_requests_classes_and_load_time(client, iris, infer_body, scrape) -> None:  # noqa: ANN001
    X, _, _ = iris
    for rows in (X[:3].tolist(), X[100:102].tolist()):
        assert client.post("/v2/models/iris/infer", content=infer_body(rows)).status_code == 200
    client.post("/v2/models/iris/infer", content="{")
    m = scrape(client.get("/metrics").text)
    labels = {"model": "iris", "variant": "blue", "version": ""}
    infer = {"endpoint": "infer", **labels}
    assert m.value("mlops_runtime_requests_total", {"code": "200", **infer}) == 2.0
    assert m.value("mlops_runtime_requests_total", {"code": "400", **infer}) == 1.0
    assert m.value("mlops_runtime_errors_total", {"kind": "client", **infer}) == 1.0
    assert m.value("mlops_runtime_predictions_total", {"class": "0", **labels}) == 3.0
    assert m.value("mlops_runtime_predictions_total", {"class": "2", **labels}) == 2.0
    assert m.value("mlops_runtime_request_duration_seconds_count", infer) == 3.0
    assert m.value("mlops_runtime_model_ready", labels) == 1.0
    assert m.value("mlops_runtime_model_load_seconds", labels) > 0


def test_openapi_documents_inference(client) -> None:  # noqa: ANN001
    spec = client.get("/openapi.json").json()
    infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/InferenceRequest"
    )
    assert {"400", "404", "413", "503"} <= set(infer["responses"])
    assert "InferenceRequest" in spec["components"]["schemas"]
    assert "RequestInput" in spec["components"]["schemas"]


def test_fastapi_route_fallback_behaves_the_same(make_client, wait_ready, infer_body) -> None:  # noqa: ANN001
    slow = make_client(infer_fast_path=False)
    wait_ready(slow)
    ok = slow.post("/v2/models/iris/infer", content=infer_body([[5.1, 3.5, 1.4, 0.2]]))
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [0]
    bad = slow.post("/v2/models/iris/infer", content="{")
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    assert slow.post("/v2/models/nope/infer", content="{}").status_code == 404
    assert slow.post("/v2/models/iris/versions/3/infer", content="{}").status_code == 404
