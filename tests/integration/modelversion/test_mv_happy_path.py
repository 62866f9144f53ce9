"""Register from a source, validate, promote: the resource and the registry agree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mvhelpers import checks_by_name

pytestmark = pytest.mark.integration


def test_register_from_source_validate_and_promote(mv: Any, registry: Any, model_name: str,
                                                   mv_operator: Any) -> None:
    run_id = registry.run({"accuracy": 0.95, "accuracy_class_0": 0.97,
                           "accuracy_class_1": 0.94}, log_model=True)
    mv.apply("cand", {
        "model": model_name,
        "source": f"runs:/{run_id}/model",
        "tags": {"team": "ml"},
        "validation": {
            "metrics": [{"name": "accuracy", "min": 0.9, "compareTo": "champion"}],
            "slices": [{"name": "per-class", "prefix": "accuracy_class_", "floor": 0.9,
                        "maxGap": 0.05}],
        },
    }, labels={"mlops.dev/trainingrun": "train-42"})
    st = mv.wait_phase("cand", "Promoted", "Rejected", "Failed")
    assert st["phase"] == "Promoted", st
    assert st["version"] == "1" and st["runId"] == run_id and st["alias"] == "champion"
    assert st["source"].startswith("models:/m-")  # resolved to the run's logged model
    assert st["primaryMetric"] == {"name": "accuracy", "value": 0.95}
    assert st.get("previousChampion") is None
    checks = checks_by_name(st)
    assert set(checks) == {"accuracy >= min", "accuracy vs champion", "per-class floor",
                           "per-class gap"}
    assert all(c["passed"] for c in checks.values())
    assert checks["accuracy vs champion"]["message"] == "no champion yet: comparison passes"
    assert checks["accuracy >= min"]["threshold"] == 0.9
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Promoted"]["status"] == "True"
    assert conds["Validated"]["status"] == "True"
    assert conds["MLflowReachable"]["status"] == "True"
    # the registry: alias, lineage, checks, promotion record
    assert registry.aliases(model_name) == {"champion": "1"}
    tags = registry.tags(model_name, "1")
    assert tags["mlops.dev/validation"] == "passed"
    assert tags["mlops.dev/run-id"] == run_id
    assert tags["mlops.dev/trainingrun"] == f"{mv.namespace}/train-42"
    assert tags["mlops.dev/modelversion"] == f"{mv.namespace}/cand"
    assert tags["mlops.dev/promoted-by"] == f"{mv.namespace}/cand"
    assert tags["mlops.dev/previous-champion"] == ""
    assert tags["team"] == "ml"
    assert len(json.loads(tags["mlops.dev/checks"])) == 4
    mv.wait_event("cand", "Promoted")
    # idempotent across restarts: no second version registered, state unchanged
    mv_operator.restart()
    mv.patch_spec("cand", {"description": "touch"})  # a new generation: re-run, no-op promote
    mv.wait("observedGeneration 2", lambda: mv.status("cand").get("observedGeneration") == 2)
    st = mv.status("cand")
    assert st["phase"] == "Promoted" and st["version"] == "1"
    versions = registry.client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in versions] == ["1"]
    assert registry.aliases(model_name) == {"champion": "1"}
    # printer columns
    out = mv.kubectl("get", "-n", mv.namespace, "mv", "cand").stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:7] == ["NAME", "MODEL", "VERSION", "PHASE", "ALIAS", "METRIC", "VALUE"]
    assert row.split()[:7] == ["cand", model_name, "1", "Promoted", "champion", "accuracy", "0.95"]


def test_second_version_must_beat_the_champion(mv: Any, registry: Any, model_name: str) -> None:
    gates = {"metrics": [{"name": "accuracy", "min": 0.5, "compareTo": "champion",
                          "minImprovement": 0.02}]}
    v1 = registry.version(model_name, {"accuracy": 0.90})
    mv.apply("v1", {"model": model_name, "version": v1, "validation": gates})
    assert mv.wait_phase("v1", "Promoted", "Rejected")["phase"] == "Promoted"
    # worse: not enough improvement → Rejected, champion stays
    v2 = registry.version(model_name, {"accuracy": 0.91})
    mv.apply("v2", {"model": model_name, "version": v2, "validation": gates})
    st = mv.wait_phase("v2", "Promoted", "Rejected")
    assert st["phase"] == "Rejected"
    check = checks_by_name(st)["accuracy vs champion"]
    assert check["passed"] is False and check["threshold"] == pytest.approx(0.92)
    assert registry.aliases(model_name) == {"champion": v1}
    assert registry.tags(model_name, v2)["mlops.dev/validation"] == "rejected"
    assert "vs champion v1" in registry.tags(model_name, v2)["mlops.dev/rejected-reason"]
    ready = mv.condition("v2", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Rejected"
    assert mv.condition("v2", "Validated")["reason"] == "GatesFailed"
    mv.wait_event("v2", "Rejected")
    # better: promoted, previous champion recorded in status and tag
    v3 = registry.version(model_name, {"accuracy": 0.95})
    mv.apply("v3", {"model": model_name, "version": v3, "validation": gates})
    st = mv.wait_phase("v3", "Promoted", "Rejected")
    assert st["phase"] == "Promoted" and st["previousChampion"] == v1
    assert registry.aliases(model_name) == {"champion": v3}
    assert registry.tags(model_name, v3)["mlops.dev/previous-champion"] == v1
    # the old champion notices it was superseded (by the operator, not by hand)
    st = mv.wait_phase("v1", "Validated", timeout=30)
    assert "alias" not in st
    assert mv.condition("v1", "Promoted")["reason"] == "Superseded"
    assert mv.condition("v1", "AliasInSync")["status"] == "True"
