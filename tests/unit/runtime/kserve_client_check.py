"""Runs inside a venv with the KServe SDK (``kserve``), not the project's: drives a model server
with KServe's REST (JSON and binary) and gRPC clients and prints one JSON report.

``python kserve_client_check.py HTTP_HOSTPORT GRPC_HOSTPORT`` per server kind, see
test_runtime_kserve_client.py, which runs it and asserts on the report.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NUMERIC = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
           "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
           "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}  # fmt: skip


def sample(datatype: str) -> np.ndarray:
    dtype = np.dtype(NUMERIC[datatype])
    if dtype.kind == "b":
        return (np.arange(6) % 2 == 0).reshape(2, 3)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, 7, 3], dtype).reshape(2, 3)
    return np.array([-1.5, 0.0, 3.25, 1e3, -2.0e-3, 7.0], dtype).reshape(2, 3)


def request(model: str, array: np.ndarray, datatype: str, binary: bool | None,
            outputs: list[str] | None = None) -> InferRequest:  # fmt: skip
    item = InferInput("input-0", list(array.shape), datatype)
    if binary is None:  # gRPC
        item.set_data_from_numpy(array)
    else:
        item.set_data_from_numpy(array, binary_data=binary)
    params = {"binary_data": True} if binary else None
    wanted = [RequestedOutput(o, parameters=params) for o in (outputs or ["predict"])]
    return InferRequest(model_name=model, infer_inputs=[item], request_outputs=wanted)


async def call(path: str, clients: dict[str, Any], base: str, req: InferRequest) -> Any:
    if path == "grpc":
        return await clients["grpc"].infer(req)
    return await clients["rest"].infer(base, req, model_name=req.model_name)


async def answer(check: Any) -> Any:
    """A health call's answer, or the status it failed with (KServe's REST client raises on
    503 where tritonclient returns False)."""
    try:
        return await check
    except Exception as exc:  # noqa: BLE001 - reported
        return status_of(exc)


def status_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        return str(response.status_code)
    code = getattr(exc, "code", None)
    return str(code()) if callable(code) else type(exc).__name__


async def main(servers: dict[str, dict[str, str]]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=20))
    grpcs = {
        k: InferenceGRPCClient(url=v["grpc"], timeout=20, retries=0) for k, v in servers.items()
    }
    bases = {k: f"http://{v['http']}" for k, v in servers.items()}
    for path in ("rest-json", "rest-binary", "grpc"):
        binary = None if path == "grpc" else path == "rest-binary"
        for kind in ("iris", "empty"):
            if path == "grpc":
                g = grpcs[kind]
                checks = [g.is_server_live(), g.is_server_ready(), g.is_model_ready("iris")]
            elif binary is False:
                base = bases[kind]
                checks = [rest.is_server_live(base), rest.is_server_ready(base),
                          rest.is_model_ready(base, "iris")]  # fmt: skip
            else:
                continue
            report[f"{path}/{kind}/health"] = [await answer(c) for c in checks]
        for datatype in NUMERIC:
            array = sample(datatype)
            try:
                out = await call(path, {"rest": rest, "grpc": grpcs["echo"]}, bases["echo"],
                                 request("echo", array, datatype, binary))  # fmt: skip
                got = out.outputs[0]
                back = got.as_numpy()
                report[f"{path}/roundtrip/{datatype}"] = (
                    got.datatype == datatype
                    and back.dtype == array.dtype
                    and back.shape == array.shape
                    and bool((back == array).all())
                )
            except Exception as exc:  # noqa: BLE001 - reported
                report[f"{path}/roundtrip/{datatype}"] = f"{type(exc).__name__}: {exc}"[:300]
        texts = np.array([["a", "bé"], ["", "z"]], dtype=object)
        try:
            out = await call(path, {"rest": rest, "grpc": grpcs["text"]}, bases["text"],
                             request("text", texts, "BYTES", binary))  # fmt: skip
            back = [
                x.decode() if isinstance(x, bytes) else x for x in out.outputs[0].as_numpy().ravel()
            ]
            report[f"{path}/roundtrip/BYTES"] = back == ["a", "bé", "", "z"]
        except Exception as exc:  # noqa: BLE001
            report[f"{path}/roundtrip/BYTES"] = f"{type(exc).__name__}: {exc}"[:300]
        row = np.array([[5.1, 3.5, 1.4, 0.2]])
        out = await call(path, {"rest": rest, "grpc": grpcs["iris"]}, bases["iris"],
                         request("iris", row, "FP64", binary))  # fmt: skip
        report[f"{path}/iris"] = out.outputs[0].as_numpy().tolist()
        errors = {
            "unknown model": ("iris", request("nope", row, "FP64", binary)),
            "wrong datatype": ("iris", request("iris", np.array([[b"x"] * 4], dtype=object),
                                               "BYTES", binary)),
            "wrong width": ("iris", request("iris", row[:, :3], "FP64", binary)),
            "unknown output": ("iris", request("iris", row, "FP64", binary, ["logits"])),
            "not ready": ("empty", request("iris", row, "FP64", binary)),
        }  # fmt: skip
        for name, (kind, req) in errors.items():
            try:
                await call(path, {"rest": rest, "grpc": grpcs[kind]}, bases[kind], req)
                report[f"{path}/error/{name}"] = "no error"
            except Exception as exc:  # noqa: BLE001
                report[f"{path}/error/{name}"] = status_of(exc)
    await rest.close()
    for g in grpcs.values():
        await g.close()
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
