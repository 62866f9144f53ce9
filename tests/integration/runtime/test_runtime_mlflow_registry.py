"""Serving registered models from a real MLflow tracking server, by version and by alias."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mlops_localstack.cluster import poll
from mlops_runtime.rest import create_app
from mlops_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.integration

ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


def _ready(client: TestClient) -> None:
    poll("the model server to be ready",
         lambda: client.get("/v2/health/ready").status_code == 200, timeout=30, interval=0.05)


def test_serve_by_version(registered_iris, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_iris.tracking_uri)
    name = registered_iris.name
    settings = RuntimeSettings(model_uri=f"models:/{name}/1", variant="green", load_retries=1)
    with TestClient(create_app(settings)) as c:
        _ready(c)
        meta = c.get(f"/v2/models/{name}").json()
        assert meta["versions"] == ["1"] and meta["platform"] == "mlflow-sklearn"
        assert meta["parameters"]["run_id"] == registered_iris.run_ids[0]
        assert "alias" not in meta["parameters"]
        out = c.post(f"/v2/models/{name}/versions/1/infer", json=ROW).json()
        assert out["model_version"] == "1" and out["outputs"][0]["data"] == [0]
        assert c.post(f"/v2/models/{name}/versions/2/infer", json=ROW).status_code == 404
        # drift is scored once the window holds DriftMonitor.MIN_ROWS (100) rows
        rows = {"inputs": [{**ROW["inputs"][0], "shape": [100, 4],
                            "data": ROW["inputs"][0]["data"] * 100}]}  # fmt: skip
        assert c.post(f"/v2/models/{name}/infer", json=rows).status_code == 200
        samples = [s for family in text_string_to_metric_families(c.get("/metrics").text)
                   for s in family.samples]  # fmt: skip
        labels = {"model": name, "variant": "green", "version": "1"}
        # the trainer's baseline artifact was found: drift is exported per feature
        drift = {s.labels["feature"]: s.labels for s in samples
                 if s.name == "mlops_runtime_feature_drift_psi"}  # fmt: skip
        assert drift["petal length (cm)"] == {"feature": "petal length (cm)", **labels}
        ready = [(s.labels, s.value) for s in samples if s.name == "mlops_runtime_model_ready"]
        assert ready == [(labels, 1.0)]


def test_serve_by_alias_pins_the_version(registered_iris, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_iris.tracking_uri)
    name = registered_iris.name
    settings = RuntimeSettings(model_uri=f"models:/{name}@champion", load_retries=1)
    with TestClient(create_app(settings)) as c:
        _ready(c)
        meta = c.get(f"/v2/models/{name}/versions/2").json()
        assert meta["versions"] == ["2"]
        assert meta["parameters"]["alias"] == "champion"
        assert meta["parameters"]["run_id"] == registered_iris.run_ids[1]
        assert c.get(f"/v2/models/{name}/versions/2/ready").json()["ready"] is True
        r = c.post("/predict", json={"instances": [[6.7, 3.0, 5.2, 2.3]]})
        assert r.json() == {"predictions": [2], "model_name": name, "model_version": "2"}


def test_unknown_alias_is_not_ready_with_the_reason(registered_iris, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_iris.tracking_uri)
    name = registered_iris.name
    app = create_app(RuntimeSettings(model_uri=f"models:/{name}@nope", load_retries=1))
    with TestClient(app) as c:
        poll("the load error", lambda: app.state.plane.load_error, timeout=30, interval=0.05)
        r = c.get("/v2/health/ready")
        assert r.status_code == 503 and "nope" in r.json()["error"]
        assert "nope" in c.get(f"/v2/models/{name}").json()["parameters"]["reason"]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_held_on_loopback(host: str) -> tuple[int, socket.socket]:
    """A port free on ``host``, and a socket bound (not listening) to 127.0.0.1 on that port:
    while it is held no other process can listen there, so a connection to 127.0.0.1 on it is
    refused unless the server under test took it (CI once saw another worker's server answer)."""
    for _ in range(50):
        port = _free_port(host)
        guard = socket.socket()
        try:
            guard.bind(("127.0.0.1", port))
        except OSError:
            guard.close()
            continue
        return port, guard
    raise RuntimeError(f"no port free on both {host} and 127.0.0.1")


def _check_grpc(address: str, model: str) -> None:
    """The same process answers gRPC on the pod IP: health SERVING, ModelInfer on the pinned
    version."""
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from mlops_runtime.oip import Stub
    from mlops_runtime.oip import open_inference_pb2 as pb

    with grpc.insecure_channel(address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5).status  # fmt: skip
        assert status == health_pb2.HealthCheckResponse.SERVING
        request = pb.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
        tensor.contents.fp64_contents.extend(ROW["inputs"][0]["data"])
        response = Stub(channel).ModelInfer(request, timeout=5)
    assert response.model_version == "2"
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [0]


def test_cli_serve_binds_the_pod_ip_and_shuts_down_gracefully(registered_iris, tmp_path) -> None:  # noqa: ANN001
    host = "127.0.0.7"  # like a pod IP on the local stack
    (port, guard), grpc_port = _port_held_on_loopback(host), _free_port(host)
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_iris.tracking_uri,
           "MLOPS_RUNTIME_MODEL_URI": f"models:/{registered_iris.name}@champion",
           "MLOPS_RUNTIME_HOST": host, "MLOPS_RUNTIME_PORT": str(port),
           "MLOPS_RUNTIME_GRPC_PORT": str(grpc_port), "MLOPS_RUNTIME_VARIANT": "champion"}  # fmt: skip
    log = (tmp_path / "serve.log").open("w+")
    cli = [sys.executable, "-m", "mlops_runtime.cli", "serve"]
    proc = subprocess.Popen(cli, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://{host}:{port}"
        with httpx.Client(base_url=url, timeout=5) as http:
            def ready() -> bool:
                try:
                    return http.get("/v2/health/ready").status_code == 200
                except httpx.TransportError:
                    return False

            poll("the served model to be ready", ready, timeout=60, interval=0.05,
                 alive=lambda: None if proc.poll() is None else "server exited")
            r = http.post(f"/v2/models/{registered_iris.name}/infer", json=ROW)
            assert r.status_code == 200 and r.json()["model_version"] == "2"
        _check_grpc(f"{host}:{grpc_port}", registered_iris.name)
        with pytest.raises(httpx.ConnectError):  # bound to the pod IP only (guard: not listening)
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the lifespan shutdown, then re-raises the signal it caught
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        guard.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    assert "Shutting down" in output and "Application shutdown complete" in output
