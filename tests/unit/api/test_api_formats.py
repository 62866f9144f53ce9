"""String formats: one regex for Python and CEL; property tests over their grammars."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_operator import crdgen
from mlops_operator.api import common
from mlops_operator.api.common import (
    DURATION_RE,
    MODEL_URI_RE,
    SOURCE_URI_RE,
    parse_duration,
)

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
digits = st.integers(min_value=0, max_value=10_000)
part = st.tuples(digits, st.sampled_from(sorted(UNITS)))
model_name = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
alias = st.from_regex(r"\A[A-Za-z][-A-Za-z0-9_]{0,15}\Z")
version = st.integers(min_value=1, max_value=10**6).map(str)
run_id = st.from_regex(r"\A[0-9a-f]{32}\Z")


@given(st.lists(part, min_size=1, max_size=4))
def test_durations_parse_to_their_sum(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    assert re.fullmatch(DURATION_RE, text)
    expected = sum(n * UNITS[u] for n, u in parts)
    assert parse_duration(text).total_seconds() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400)],
)
def test_duration_examples(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1 hour", "-5s", "5d", "1h 30m", "m5", "5M"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


@given(st.text(max_size=12))
def test_duration_regex_and_parser_agree(text: str) -> None:
    try:
        parse_duration(text)
    except ValueError:
        assert not re.fullmatch(DURATION_RE, text)
    else:
        assert re.fullmatch(DURATION_RE, text)


@given(model_name, alias | version.map(lambda v: "/" + v))
def test_models_uris_match(name: str, ref: str) -> None:
    uri = f"models:/{name}@{ref}" if not ref.startswith("/") else f"models:/{name}{ref}"
    assert re.fullmatch(MODEL_URI_RE, uri)
    assert re.fullmatch(SOURCE_URI_RE, uri)


@given(run_id, st.sampled_from(["model", "artifacts/model", "sk.model"]))
def test_runs_uris_match(rid: str, path: str) -> None:
    assert re.fullmatch(MODEL_URI_RE, f"runs:/{rid}/{path}")
    assert re.fullmatch(SOURCE_URI_RE, f"runs:/{rid}/{path}")


@pytest.mark.parametrize(
    "uri",
    [
        "models:/iris",
        "models:/iris@",
        "models:/iris/0",
        "models:/iris/v1",
        "models:/-iris@champion",
        "runs:/abc",
        "runs://model",
        "s3://bucket/model",
        "iris",
        "models:/iris@champion extra",
    ],
)
def test_bad_model_uris(uri: str) -> None:
    assert not re.fullmatch(MODEL_URI_RE, uri)


@pytest.mark.parametrize(
    "uri", ["s3://bucket/iris/model", "file:///tmp/model", "mlflow-artifacts:/1/abc/artifacts/m"]
)
def test_artifact_sources(uri: str) -> None:
    assert re.fullmatch(SOURCE_URI_RE, uri)
    assert not re.fullmatch(MODEL_URI_RE, uri)


def test_python_and_cel_use_the_same_regexes() -> None:
    """Each *_RE constant appears verbatim in a CEL rule of the CRDs (no RE2 escaping)."""
    text = "\n".join(crdgen.render_yaml(c) for c in crdgen.generate_crds())
    rules = [rule["rule"] for crd in crdgen.generate_crds() for rule in _all_rules(crd)]
    for name in dir(common):
        if name.endswith("_RE") and not name.startswith("_"):
            regex = getattr(common, name)
            assert "\\" not in regex, name
            assert "'" not in regex, name
            assert any(f"'{regex}'" in r for r in rules), f"{name} not used by any CEL rule"
    assert text


def _all_rules(node: object) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if isinstance(node, dict):
        found.extend(node.get("x-kubernetes-validations", []))
        for value in node.values():
            found.extend(_all_rules(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_all_rules(value))
    return found
