"""The micro-batcher behind a real model server (uvicorn on loopback): requests of different
widths mixed under concurrency, with a model that does not declare its width."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np

from mlops_runtime.codec import FeatureSpec
from mlops_runtime.model import LoadedModel


def widthless(iris_loaded: Any) -> LoadedModel:
    """The iris estimator served without a declared width (a pyfunc without a signature looks
    like this): only the model itself can refuse a row of the wrong width."""
    meta = [{"name": "input-0", "datatype": "FP64", "shape": [-1, -1]}]
    return LoadedModel(name="iris", version="1", platform="test",
                       spec=FeatureSpec(None, None, True, np.dtype(np.float64)),
                       methods={"predict": iris_loaded.methods["predict"]}, inputs=meta,
                       outputs=[{**meta[0], "name": "predict"}], source_uri="memory:iris")  # fmt: skip


def body(width: int, rows: int = 1) -> bytes:
    data = [5.1, 3.5, 1.4, 0.2, 1.0, 2.0][:width] * rows
    return json.dumps({"inputs": [{"name": "input-0", "shape": [rows, width],
                                   "datatype": "FP64", "data": data}]}).encode()  # fmt: skip


async def test_mixed_widths_under_concurrency_each_get_their_own_answer(
    start_server, iris_loaded  # noqa: ANN001
) -> None:
    server = start_server(widthless(iris_loaded), model_name="iris", max_batch_wait_ms=20.0)
    url = f"http://{server.http}/v2/models/iris/infer"
    widths = [4, 3, 4, 5, 4, 4, 3, 4] * 8  # wrong widths interleaved with right ones
    limits = httpx.Limits(max_connections=len(widths))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(3):  # several rounds: the batching worker must survive each
            responses = await asyncio.gather(*(client.post(url, content=body(w)) for w in widths))
            for width, response in zip(widths, responses, strict=True):
                if width == 4:
                    assert response.status_code == 200, response.text
                    assert response.json()["outputs"][0]["data"] == [0]
                else:
                    assert response.status_code == 400, response.text
                    assert f"{width} features" in response.json()["error"]
        # batches really were shared (else this test would not mix widths in one batch)
        assert server.plane.batcher.batches < 3 * widths.count(4)
        # and the worker still serves a lone request afterwards
        lone = await client.post(url, content=body(4, rows=2))
        assert lone.status_code == 200 and lone.json()["outputs"][0]["data"] == [0, 0]
