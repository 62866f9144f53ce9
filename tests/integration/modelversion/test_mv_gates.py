"""Each gate type failing, a gate on a metric never logged, sources that do not exist."""

from __future__ import annotations

from typing import Any

import pytest
from mvhelpers import checks_by_name, stage_count

pytestmark = pytest.mark.integration

GOOD = {"accuracy": 0.95, "loss": 0.1, "accuracy_class_a": 0.96, "accuracy_class_b": 0.94}


@pytest.mark.parametrize("case", ["min", "max", "floor", "gap", "missing"])
def test_each_gate_type_failing_rejects(case: str, mv: Any, registry: Any,
                                        model_name: str) -> None:
    metrics = dict(GOOD)
    validation: dict[str, Any] = {
        "metrics": [{"name": "accuracy", "min": 0.9}, {"name": "loss", "max": 0.2}],
        "slices": [{"name": "per-class", "prefix": "accuracy_class_", "floor": 0.9,
                    "maxGap": 0.05}],
    }
    failing = {
        "min": ("accuracy >= min", {"accuracy": 0.85}),
        "max": ("loss <= max", {"loss": 0.3}),
        "floor": ("per-class floor", {"accuracy_class_b": 0.88, "accuracy_class_a": 0.92}),
        "gap": ("per-class gap", {"accuracy_class_a": 0.99, "accuracy_class_b": 0.91}),
        "missing": ("auc", {}),
    }[case]
    check_name, override = failing
    metrics.update(override)
    if case == "missing":
        validation["metrics"].append({"name": "auc", "min": 0.5})
    version = registry.version(model_name, metrics)
    run_id = registry.run_id(model_name, version)
    mv.apply("cand", {"model": model_name, "version": version, "validation": validation})
    st = mv.wait_phase("cand", "Rejected", "Promoted", "Failed")
    assert st["phase"] == "Rejected", st
    checks = checks_by_name(st)
    assert [n for n, c in checks.items() if not c["passed"]] == [check_name]
    if case == "missing":
        assert checks["auc"]["message"] == f"metric auc not found in run {run_id}"
        assert f"metric auc not found in run {run_id}" in st["message"]
    else:
        assert checks[check_name]["value"] is not None
        assert checks[check_name]["threshold"] is not None
    ready = mv.condition("cand", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Rejected")
    assert mv.condition("cand", "Validated")["status"] == "False"
    tags = registry.tags(model_name, version)
    assert tags["mlops.dev/validation"] == "rejected"
    assert tags["mlops.dev/rejected-reason"] in st["message"]
    assert "champion" not in registry.aliases(model_name)
    event = mv.wait_event("cand", "Rejected")
    assert event["type"] == "Warning"


def test_missing_source_fails_and_a_missing_version_is_waited_for(
    mv: Any, registry: Any, model_name: str, mv_operator: Any
) -> None:
    failed_before = stage_count(mv_operator, "validation", "failure")
    registry.version(model_name, GOOD)  # the model exists, version 2 does not
    mv.apply("no-run", {"model": model_name, "source": "runs:/" + "0" * 32 + "/model"})
    mv.apply("no-version", {"model": model_name, "version": "2"})
    run_id = registry.run({"accuracy": 0.9})  # a run without a model
    mv.apply("no-model", {"model": model_name, "source": f"runs:/{run_id}/model"})
    expected = {
        "no-run": f"run {'0' * 32} does not exist",
        "no-model": f"run {run_id} has no model at 'model'",
    }
    for name, text in expected.items():
        st = mv.wait_phase(name, "Failed", "Promoted", "Rejected")
        assert st["phase"] == "Failed", st
        assert text in st["message"]
        ready = mv.condition(name, "Ready")
        assert ready["reason"] == "SourceNotFound" and text in ready["message"]
        assert mv.wait_event(name, "SourceNotFound")["type"] == "Warning"
    versions = registry.client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in versions] == ["1"]  # nothing registered for bad sources
    assert registry.aliases(model_name) == {}
    # each failed source counted once as a failed validation
    assert stage_count(mv_operator, "validation", "failure") - failed_before == len(expected)

    # a pinned version that does not exist yet is waited for, not failed (GitOps ordering)
    ready = mv.wait("no-version waiting", lambda: (
        c if (c := mv.condition("no-version", "Ready")).get("reason") == "VersionNotFound"
        else None))
    assert f"model {model_name} has no version 2" in ready["message"]
    st = mv.status("no-version")
    assert st["phase"] == "Pending"
    # the generation was seen: it waits for its version (GitOps tools read observedGeneration)
    assert st["observedGeneration"] == mv.get("no-version")["metadata"]["generation"]
    assert mv.wait_event("no-version", "VersionNotFound")["type"] == "Warning"
    registry.version(model_name, GOOD)  # version 2 gets registered (e.g. training finished)
    st = mv.wait_phase("no-version", "Promoted", "Rejected", "Failed", timeout=90)
    assert st["phase"] == "Promoted" and st["version"] == "2"
    assert registry.aliases(model_name) == {"champion": "2"}
