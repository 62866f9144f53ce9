"""Hand-written, allocation-light decoding and encoding of Open Inference Protocol messages.

Parsing uses orjson and checks exactly what the protocol and the model's signature require, so
that every client mistake becomes :class:`~mlops_runtime.errors.InvalidRequest` (a 400).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlops_runtime.errors import InvalidRequest

#: OIP datatype → numpy dtype.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
NUMERIC = frozenset(DATATYPES) - {"BYTES"}
_MAX_DIMS = 8


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array (objects and strings are ``BYTES``)."""
    kind = array.dtype.kind
    if kind in "OUS":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if dtype == array.dtype:
            return name
    return "FP64" if kind == "f" else "INT64"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What the model accepts: the number of features, their names, and numeric or not."""

    n_features: int | None
    names: tuple[str, ...] | None
    numeric: bool = True
    dtype: np.dtype[Any] = np.dtype(np.float64)


@dataclass(slots=True)
class DecodedRequest:
    """A validated inference request: one 2-D row block plus what to return."""

    rows: np.ndarray
    outputs: tuple[str, ...]
    request_id: str | None


def loads(body: bytes) -> Any:
    """Parse JSON, turning any syntax error into a 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or len(value) > _MAX_DIMS:
        raise InvalidRequest(f"{where}: 'shape' must be a non-empty list of at most 8 integers")
    for dim in value:
        if type(dim) is not int or dim < 0:
            raise InvalidRequest(f"{where}: 'shape' must hold non-negative integers, got {dim!r}")
    return tuple(value)


def _tensor(item: Any, index: int, spec: FeatureSpec) -> tuple[str, np.ndarray]:
    """Validate one input tensor and return (name, array reshaped to its declared shape)."""
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(f"{where}: 'name' must be a string")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidRequest(f"{where}: unknown datatype {datatype!r}")
    if spec.numeric and datatype not in NUMERIC:
        raise InvalidRequest(f"{where}: datatype {datatype} given, the model expects numbers")
    shape = _shape(item.get("shape"), where)
    data = item.get("data")
    if not isinstance(data, list):
        raise InvalidRequest(f"{where}: 'data' must be a list")
    try:
        array = np.asarray(data, dtype=DATATYPES[datatype] if spec.numeric else object)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"{where}: data does not match datatype {datatype}: {exc}") from None
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidRequest(
            f"{where}: shape {list(shape)} needs {expected} elements, data has {array.size}"
        )
    if spec.numeric and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidRequest(f"{where}: data holds NaN or infinity")
    return name, array.reshape(shape)


def decode_inputs(inputs: Any, spec: FeatureSpec) -> np.ndarray:
    """Turn the ``inputs`` list into one 2-D block of rows for the model.

    Either one tensor of shape ``[N, F]`` (or ``[F]`` for one row), or one tensor per feature
    named as in the model's signature, each of shape ``[N]`` or ``[N, 1]``.
    """
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    tensors = [_tensor(item, i, spec) for i, item in enumerate(inputs)]
    if len(tensors) == 1 and (spec.names is None or tensors[0][0] not in spec.names):
        rows = tensors[0][1]
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        elif rows.ndim != 2:
            raise InvalidRequest(
                f"inputs[0]: expected a 2-D tensor [rows, features], got {rows.ndim}-D"
            )
    else:
        rows = _columns(tensors, spec)
    if spec.n_features is not None and rows.shape[1] != spec.n_features:
        raise InvalidRequest(
            f"the model expects {spec.n_features} features per row, got {rows.shape[1]}"
        )
    if rows.shape[0] == 0:
        raise InvalidRequest("no rows to predict")
    return rows


def _columns(tensors: list[tuple[str, np.ndarray]], spec: FeatureSpec) -> np.ndarray:
    if spec.names is None:
        raise InvalidRequest("the model takes a single tensor input [rows, features]")
    by_name = dict(tensors)
    if len(by_name) != len(tensors):
        raise InvalidRequest("duplicate input names")
    unknown = sorted(set(by_name) - set(spec.names))
    if unknown:
        raise InvalidRequest(f"unknown inputs {unknown}; the model takes {list(spec.names)}")
    missing = [n for n in spec.names if n not in by_name]
    if missing:
        raise InvalidRequest(f"missing inputs {missing}")
    columns = []
    for name in spec.names:
        col = by_name[name]
        if col.ndim == 2 and col.shape[1] == 1:
            col = col[:, 0]
        if col.ndim != 1:
            raise InvalidRequest(f"input {name!r} must have shape [rows] or [rows, 1]")
        columns.append(col)
    if len({c.shape[0] for c in columns}) != 1:
        raise InvalidRequest("all inputs must have the same number of rows")
    return np.stack(columns, axis=1)


def decode_infer(body: bytes, spec: FeatureSpec, known_outputs: frozenset[str]) -> DecodedRequest:
    """Parse and validate an OIP inference request body."""
    message = loads(body)
    if not isinstance(message, dict):
        raise InvalidRequest("the body must be a JSON object")
    rows = decode_inputs(message.get("inputs"), spec)
    request_id = message.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")
    outputs: tuple[str, ...] = ("predict",)
    wanted = message.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
        ):
            raise InvalidRequest("'outputs' must be a list of objects with a 'name'")
        outputs = tuple(o["name"] for o in wanted) or outputs
        bad = [o for o in outputs if o not in known_outputs]
        if bad:
            raise InvalidRequest(f"unknown outputs {bad}; available: {sorted(known_outputs)}")
    return DecodedRequest(rows=rows, outputs=outputs, request_id=request_id)


def decode_instances(body: bytes, spec: FeatureSpec) -> np.ndarray:
    """Parse ``{"instances": [...]}``: rows as lists, or objects keyed by feature name."""
    message = loads(body)
    if not isinstance(message, dict) or not isinstance(message.get("instances"), list):
        raise InvalidRequest("the body must be an object with an 'instances' list")
    instances = message["instances"]
    if not instances:
        raise InvalidRequest("'instances' is empty")
    if all(isinstance(row, dict) for row in instances):
        if spec.names is None:
            raise InvalidRequest("the model has no feature names; send rows as lists")
        try:
            instances = [[row[name] for name in spec.names] for row in instances]
        except KeyError as exc:
            raise InvalidRequest(f"instance misses feature {exc.args[0]!r}") from None
    elif not all(isinstance(row, list) for row in instances):
        raise InvalidRequest("instances must all be lists or all be objects")
    width = len(instances[0])
    item = {"name": "instances", "datatype": "FP64" if spec.numeric else "BYTES",
            "shape": [len(instances), width], "data": instances}  # fmt: skip
    return decode_inputs([item], spec)


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """An OIP output tensor; numpy arrays are serialised by orjson directly."""
    if array.dtype.kind in "OUS":
        data: Any = [x.decode() if isinstance(x, bytes) else str(x) for x in array.ravel()]
    elif array.dtype.kind not in "biuf" or not array.flags.c_contiguous:
        data = np.ascontiguousarray(array).ravel().tolist()
    else:
        data = array.ravel()
    return {"name": name, "datatype": datatype_of(array), "shape": list(array.shape), "data": data}


def dumps(message: Any) -> bytes:
    """Serialise a response (numpy arrays included)."""
    return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
