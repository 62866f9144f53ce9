"""Concurrent candidates, an alias moved by hand, rollback."""

from __future__ import annotations

from typing import Any

import pytest
from mvhelpers import stage_count

pytestmark = pytest.mark.integration

GATES = {"metrics": [{"name": "accuracy", "min": 0.5, "compareTo": "champion"}]}


def _champion(mv: Any, registry: Any, model: str, accuracy: float, name: str = "v1") -> str:
    version = registry.version(model, {"accuracy": accuracy})
    mv.apply(name, {"model": model, "version": version, "validation": GATES})
    assert mv.wait_phase(name, "Promoted", "Rejected")["phase"] == "Promoted"
    return str(version)


@pytest.mark.parametrize("scores", [(0.90, 0.95), (0.95, 0.90)], ids=["newer-wins", "older-wins"])
def test_two_concurrent_candidates_end_on_the_better_one(
    scores: tuple[float, float], mv: Any, registry: Any, model_name: str, mv_operator: Any
) -> None:
    promoted_before = stage_count(mv_operator, "promotion", "success")
    v1 = _champion(mv, registry, model_name, 0.80)
    va = registry.version(model_name, {"accuracy": scores[0]})
    vb = registry.version(model_name, {"accuracy": scores[1]})
    winner, loser = (vb, va) if scores[1] > scores[0] else (va, vb)
    # both applied at once: validated against the same champion v1, promotions serialized
    mv.kubectl("apply", "-n", mv.namespace, "-f", "-", input="\n---\n".join(
        f"apiVersion: mlops.dev/v1alpha1\nkind: ModelVersion\nmetadata: {{name: c{v}}}\n"
        f"spec: {{model: {model_name}, version: '{v}', validation: {{metrics: [{{name: accuracy,"
        f" min: 0.5, compareTo: champion}}]}}}}" for v in (va, vb)))
    st_w = mv.wait_phase(f"c{winner}", "Promoted", "Rejected", "Validated")
    st_l = mv.wait_phase(f"c{loser}", "Validated", "Rejected", timeout=60)
    assert st_w["phase"] == "Promoted"
    assert registry.aliases(model_name) == {"champion": winner}
    # the loser either lost the race (LostToConcurrentCandidate), was superseded after
    # promoting first, or was rejected by its own comparison if the winner was already in place
    reason = mv.condition(f"c{loser}", "Promoted").get("reason") or \
        mv.condition(f"c{loser}", "Validated").get("reason")
    assert reason in ("LostToConcurrentCandidate", "Superseded", "GatesFailed"), st_l
    assert registry.tags(model_name, winner)["mlops.dev/previous-champion"] in (v1, loser)
    assert mv.wait_phase("v1", "Validated", timeout=30)
    assert mv.condition("v1", "Promoted")["reason"] == "Superseded"
    # no flapping: the alias stays on the winner once both are settled
    assert registry.aliases(model_name) == {"champion": winner}
    # v1, then the winner (and the loser too when it promoted first and was superseded)
    assert stage_count(mv_operator, "promotion", "success") - promoted_before >= 2


def test_alias_moved_by_hand_is_reported_not_reverted(mv: Any, registry: Any,
                                                      model_name: str) -> None:
    v1 = _champion(mv, registry, model_name, 0.9)
    v2 = registry.version(model_name, {"accuracy": 0.7})
    registry.set_alias(model_name, "champion", v2)  # "someone in the MLflow UI"
    cond = mv.wait("AliasInSync=False", lambda: (
        c if (c := mv.condition("v1", "AliasInSync")).get("status") == "False" else None), 30)
    assert cond["reason"] == "AliasMovedExternally"
    assert f"v{v2}" in cond["message"]
    st = mv.status("v1")
    assert st["phase"] == "Validated" and "alias" not in st
    assert mv.wait_event("v1", "AliasMovedExternally")["type"] == "Warning"
    assert registry.aliases(model_name) == {"champion": v2}
    assert registry.tags(model_name, v1)["mlops.dev/promoted-by"] == f"{mv.namespace}/v1"


def test_rollback_with_force(mv: Any, registry: Any, model_name: str) -> None:
    v1 = _champion(mv, registry, model_name, 0.9)
    v2 = _champion(mv, registry, model_name, 0.95, name="v2")
    assert registry.aliases(model_name) == {"champion": v2}
    mv.apply("rollback", {"model": model_name, "version": v1, "validation": GATES,
                          "promote": {"alias": "champion", "force": True}})
    st = mv.wait_phase("rollback", "Promoted", "Rejected")
    assert st["phase"] == "Promoted" and st["previousChampion"] == v2
    assert mv.condition("rollback", "Promoted")["reason"] == "Rollback"
    assert "skipped" in next(c for c in st["checks"] if c["name"] == "accuracy vs champion")[
        "message"]
    assert registry.aliases(model_name) == {"champion": v1}
    tags = registry.tags(model_name, v1)
    assert tags["mlops.dev/rollback"] == f"from v{v2}"
    assert tags["mlops.dev/previous-champion"] == v2
    assert tags["mlops.dev/promoted-by"] == f"{mv.namespace}/rollback"
    mv.wait_event("rollback", "Rollback")
    assert mv.wait_phase("v2", "Validated", timeout=30)
    assert mv.condition("v2", "Promoted")["reason"] == "Superseded"
