"""Hypothesis strategies for TrainingRun / ModelVersion / ModelDeployment specs, derived from the
CRDs' openAPI schemas (generated from the pydantic models in ``mlops_operator.api``).

Two sources, mixed:

* **schema**: a spec drawn from the schema itself — every object's properties (required ones
  always, optional ones sometimes), strings within their length bounds (often a value that
  makes sense for the field, taken from the examples), numbers within their bounds, enums;
* **example**: one of ``examples/iris/*.yaml`` with one or two mutations (a field set to a
  value drawn from its schema, a field deleted, a list emptied).

Both mix in invalid values at every level on purpose: wrong types, numbers out of range,
strings too long or odd (empty, whitespace, NUL, non-ASCII, path-like), a required field
missing. The apiserver must reject those with a message, or the operator must survive them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples" / "iris"

KINDS = {
    "TrainingRun": "trainingruns",
    "ModelVersion": "modelversions",
    "ModelDeployment": "modeldeployments",
}

#: strings that are odd anywhere
ODD_STRINGS = ["", " ", "\x00", "é☃", "../../etc/passwd", "a" * 300, "-", "1e309", "null",
               "${HOME}", "a b", "UPPER", "0", "-1", "\n"]
#: one invalid value of each JSON type
WRONG_TYPES: list[Any] = ["text", 7, -1.5, True, [], ["x"], {}, {"a": 1}, None]


def spec_schema(kind: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"{KINDS[kind]}.mlops.dev.yaml").read_text())
    (version,) = [v for v in doc["spec"]["versions"] if v.get("storage")]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def example_specs(kind: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                out.append(doc["spec"])
    return out


def _strings_by_field(specs: list[Any]) -> dict[str, set[str]]:
    """Every string value of the examples, by the name of the field that holds it."""
    found: dict[str, set[str]] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            found.setdefault(key, set()).add(node)

    for kind in KINDS:
        for spec in example_specs(kind):
            walk(spec, "spec")
    for spec in specs:
        walk(spec, "spec")
    return found


STRINGS = _strings_by_field([])
GENERIC = ["iris", "champion", "1", "2", "accuracy", "sklearn://iris", "runs:/abc123/model",
           "models:/iris@champion", "30s", "1m", "100m", "256Mi", "img:1", "x"]


def bad_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema refuses (or that sits at a boundary)."""
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(WRONG_TYPES)]
    kind = schema.get("type")
    if kind == "string":
        options.append(st.sampled_from(ODD_STRINGS))
        if "maxLength" in schema:
            options.append(st.just("y" * (int(schema["maxLength"]) + 1)))
    if kind in ("integer", "number"):
        for bound, step in (("minimum", -1), ("maximum", 1)):
            if bound in schema:
                options.append(st.just(schema[bound] + step))
        options.append(st.sampled_from([0, -1, 2**31, -(2**63), 1e308]))
    if kind == "array" and "maxItems" in schema:
        options.append(st.just([None] * (int(schema["maxItems"]) + 1)))
    return st.one_of(options)


def _string(schema: dict[str, Any], key: str) -> st.SearchStrategy[str]:
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"]])
    lo, hi = int(schema.get("minLength", 0)), int(schema.get("maxLength", 64))
    known = sorted(v for v in STRINGS.get(key, set()) | set(GENERIC) if lo <= len(v) <= hi)
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=lo,
                   max_size=min(hi, lo + 40))
    return st.one_of(st.sampled_from(known), text) if known else text


def from_schema(schema: dict[str, Any], key: str = "spec", depth: int = 0,
                bad: int = 12) -> st.SearchStrategy[Any]:
    """A value of ``schema``; about one node in ``bad`` is replaced by an invalid value."""
    good = _good(schema, key, depth, bad)
    if bad <= 0 or depth == 0:
        return good
    return st.integers(0, bad - 1).flatmap(lambda r: bad_value(schema) if r == 0 else good)


def _good(schema: dict[str, Any], key: str, depth: int, bad: int) -> st.SearchStrategy[Any]:
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 100), st.sampled_from(["50%", "1", "100m", "x"]))
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if not props:
            values = schema.get("additionalProperties")
            inner = from_schema(values, key, depth + 1, bad) if isinstance(values, dict) \
                else st.sampled_from(GENERIC)
            return st.dictionaries(st.sampled_from(GENERIC + ["k", "A_B", "a.b"]), inner,
                                   max_size=3)
        required = set(schema.get("required") or [])
        fixed = {k: from_schema(v, k, depth + 1, bad) for k, v in props.items() if k in required}
        optional = {k: from_schema(v, k, depth + 1, bad) for k, v in props.items()
                    if k not in required and depth < 5}
        return st.fixed_dictionaries(fixed, optional=optional)
    if kind == "array":
        items = schema.get("items") or {}
        hi = min(int(schema.get("maxItems", 3)), 3)
        return st.lists(from_schema(items, key, depth + 1, bad), max_size=hi)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.sampled_from(["2024-01-01T00:00:00Z", "not-a-time"])
        return _string(schema, key)
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -5)), int(schema.get("maximum", 1000)))
    if kind == "number":
        return st.floats(schema.get("minimum", -10.0), schema.get("maximum", 10.0),
                         allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return st.sampled_from(GENERIC)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _schema_at(schema: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    for part in path:
        if isinstance(part, int):
            schema = schema.get("items") or {}
        else:
            props = schema.get("properties") or {}
            schema = props.get(part) or (schema.get("additionalProperties") or {}
                                         if isinstance(schema.get("additionalProperties"), dict)
                                         else {})
    return schema


@st.composite
def mutated_example(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """An example spec with one or two mutations."""
    schema = spec_schema(kind)
    spec = copy.deepcopy(draw(st.sampled_from(example_specs(kind))))
    for _ in range(draw(st.integers(1, 2))):
        paths = _paths(spec)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = spec
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["set", "set", "set", "bad", "delete"]))
        sub = _schema_at(schema, path)
        if action == "delete":
            if isinstance(parent, list):
                parent.pop(last)
            else:
                del parent[last]
        elif action == "bad":
            parent[last] = draw(bad_value(sub))
        else:
            parent[last] = draw(from_schema(sub, str(last), depth=1, bad=0))
    return spec


def specs(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Specs of ``kind``: drawn from the schema, or a mutated example (more often)."""
    return st.one_of(mutated_example(kind), mutated_example(kind),
                     from_schema(spec_schema(kind), bad=30))
