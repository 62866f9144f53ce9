"""The CRD generator: structural output, CEL placement, printer columns, and the drift check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator import crdgen
from mlops_operator.api import KINDS, TRAINING_RUN

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "crds"
CRDS = crdgen.generate_crds()
BY_KIND = {crd["spec"]["names"]["kind"]: crd for crd in CRDS}


def _schema(kind: str) -> dict[str, Any]:
    return BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, sub in node.get("properties", {}).items():
            yield from _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}[*]")


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.strip(".").split("."):
        node = node["properties"][part]
        if node.get("type") == "array":
            node = node["items"]
    return node


def test_committed_crds_equal_generated() -> None:
    """Fails when crds/ is stale: run `make crds` (python -m mlops_operator.crdgen crds/)."""
    assert crdgen.diff_crds(CRD_DIR) == ""


def test_one_crd_per_kind_in_stable_order() -> None:
    names = [crd["metadata"]["name"] for crd in CRDS]
    assert names == [
        "trainingruns.mlops.dev",
        "modelversions.mlops.dev",
        "modeldeployments.mlops.dev",
    ]
    assert crdgen.generate_crds() == CRDS  # deterministic
    assert crdgen.render_all().count("kind: CustomResourceDefinition") == 3


@pytest.mark.parametrize("crd", CRDS, ids=lambda c: c["metadata"]["name"])
def test_crd_metadata(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert spec["group"] == "mlops.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["mlops"]
    assert spec["names"]["shortNames"][0] in {"tr", "mv", "md"}
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("crd", CRDS, ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural_and_bounded(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    crdgen.check_structural(schema)
    text = crdgen.render_yaml(crd)
    for banned in ("x-kubernetes-preserve-unknown-fields", "$ref", "anyOf", "title:", "null"):
        assert banned not in text
    for path, node in _walk(schema):
        if path == ".metadata":
            continue
        if node.get("type") == "object":
            assert "properties" in node or "additionalProperties" in node, path
            assert node.get("additionalProperties") is not False, path
        if path not in ("", ".apiVersion", ".kind") and not path.endswith(("[]", "[*]")):
            assert node.get("description"), f"{path} has no description"


def test_check_structural_rejects_bad_schemas() -> None:
    with pytest.raises(crdgen.SchemaError, match="without properties"):
        crdgen.check_structural({"type": "object", "properties": {"x": {"type": "object"}}})
    with pytest.raises(crdgen.SchemaError, match="maxItems"):
        crdgen.check_structural({"type": "array", "items": {"type": "integer"}})
    with pytest.raises(crdgen.SchemaError, match="not allowed"):
        crdgen.check_structural({"type": "object", "x-kubernetes-preserve-unknown-fields": True})


def test_no_defaults_or_rules_under_status() -> None:
    """The operator owns status: the apiserver neither defaults nor second-guesses it."""
    for crd in CRDS:
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        for path, node in _walk(status):
            assert "default" not in node, path
            assert "x-kubernetes-validations" not in node, path


def test_defaults_reach_the_crd() -> None:
    md = _schema("ModelDeployment")
    assert _node(md, ".spec.runtime.port")["default"] == 8080
    assert _node(md, ".spec.variants.weight")["default"] == 100
    assert _node(md, ".spec.rollout")["default"] == {
        "strategy": "Immediate",
        "autoPromote": True,
        "autoRollback": True,
    }
    assert _node(md, ".spec.retrain.cooldown")["default"] == "1h"
    mv = _schema("ModelVersion")
    assert _node(mv, ".spec.promote")["default"] == {
        "alias": "champion",
        "mode": "Auto",
        "force": False,
    }


def test_int_or_string_quantities() -> None:
    tr = _schema("TrainingRun")
    requests = _node(tr, ".spec.resources.requests")
    assert requests["additionalProperties"] == {"x-kubernetes-int-or-string": True}


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind in BY_KIND:
        conditions = _schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert "type" in conditions["items"]["required"]


def _rules(node: dict[str, Any]) -> list[str]:
    return [r["message"] for r in node.get("x-kubernetes-validations", [])]


def test_cel_rules_sit_on_the_right_nodes() -> None:
    md = _schema("ModelDeployment")
    assert "the weights of all variants must sum to 100" in _rules(md["properties"]["spec"])
    assert "variant names must be unique" in _rules(md["properties"]["spec"])
    assert "replicas must not be negative" in _rules(_node(md, ".spec.variants"))
    assert any("model URI" in m for m in _rules(_node(md, ".spec.variants.modelUri")))
    assert any("duration" in m for m in _rules(_node(md, ".spec.rollout.steps.pause")))
    mv = _schema("ModelVersion")
    assert "exactly one of version and source must be set" in _rules(mv["properties"]["spec"])
    tr = _schema("TrainingRun")
    root = _rules(tr)
    assert "image is immutable once the run has started" in root
    assert len(root) == len(TRAINING_RUN.root_rules) == 7
    # Rules of a nested model are not inherited by its embedding (root rules stay at root).
    retrain_template = _node(md, ".spec.retrain.template")
    assert not any("immutable" in m for m in _rules(retrain_template))


def test_every_cel_rule_has_a_message_and_no_backslash() -> None:
    for crd in CRDS:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"], path
                assert "\\" not in rule["rule"], path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_printer_columns_point_at_schema_fields(kind: Any) -> None:
    schema = _schema(kind.kind)
    columns = BY_KIND[kind.kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns[-1]["name"] == "Age"
    for column in columns[:-1]:
        node = _node(schema, column["jsonPath"])
        expected = {"string": "string", "number": "number", "integer": "integer"}[column["type"]]
        assert node["type"] == expected, column


def test_modeldeployment_columns() -> None:
    columns = BY_KIND["ModelDeployment"]["spec"]["versions"][0]["additionalPrinterColumns"]
    visible = [c["name"].upper() for c in columns if not c.get("priority")]
    assert visible == ["MODEL", "CHAMPION", "CHALLENGER", "TRAFFIC", "READY", "PHASE", "AGE"]


def test_main_writes_checks_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", str(tmp_path)]) == 1  # missing files are stale
    assert crdgen.main([str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{c['metadata']['name']}.yaml" for c in CRDS)
    capsys.readouterr()
    assert crdgen.main(["--check", str(tmp_path)]) == 0

    path = tmp_path / "modeldeployments.mlops.dev.yaml"
    path.write_text(path.read_text().replace("default: 8080", "default: 9090"))
    (tmp_path / "old.mlops.dev.yaml").write_text("stale")
    assert crdgen.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-                    default: 9090" in out
    assert "+                    default: 8080" in out
    assert "old.mlops.dev.yaml: not generated any more" in out

    assert crdgen.main([]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert docs == CRDS


def test_rendered_yaml_round_trips() -> None:
    for crd in CRDS:
        assert yaml.safe_load(crdgen.render_yaml(crd)) == crd
