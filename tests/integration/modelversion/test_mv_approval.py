"""Manual approval end to end, and a second alias (challenger)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


def test_manual_approval_flow(mv: Any, registry: Any, model_name: str, mv_operator: Any) -> None:
    v1 = registry.version(model_name, {"accuracy": 0.9})
    spec = {"model": model_name, "version": v1,
            "validation": {"metrics": [{"name": "accuracy", "min": 0.8,
                                        "compareTo": "champion"}]},
            "promote": {"alias": "champion", "mode": "Manual"}}
    mv.apply("manual", spec)
    st = mv.wait_phase("manual", "AwaitingApproval", "Promoted", "Rejected")
    assert st["phase"] == "AwaitingApproval", st
    ready = mv.condition("manual", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AwaitingApproval")
    assert mv.condition("manual", "Validated")["status"] == "True"
    assert registry.aliases(model_name) == {}
    assert registry.tags(model_name, v1)["mlops.dev/validation"] == "passed"
    mv.wait_event("manual", "AwaitingApproval")
    # still waiting after an operator restart
    mv_operator.restart()
    assert mv.status("manual")["phase"] == "AwaitingApproval"
    mv.patch_spec("manual", {"approved": True})
    st = mv.wait_phase("manual", "Promoted", "Rejected", "Validated")
    assert st["phase"] == "Promoted" and st["alias"] == "champion"
    assert registry.aliases(model_name) == {"champion": v1}
    assert registry.tags(model_name, v1)["mlops.dev/promoted-by"] == f"{mv.namespace}/manual"
    assert mv.condition("manual", "Ready")["status"] == "True"


def test_challenger_alias(mv: Any, registry: Any, model_name: str) -> None:
    v1 = registry.version(model_name, {"accuracy": 0.9})
    registry.set_alias(model_name, "champion", v1)  # a champion set outside, left alone
    v2 = registry.version(model_name, {"accuracy": 0.85})
    mv.apply("chal", {"model": model_name, "version": v2,
                      "validation": {"metrics": [{"name": "accuracy", "min": 0.8}]},
                      "promote": {"alias": "challenger"}})
    st = mv.wait_phase("chal", "Promoted", "Rejected")
    assert st["phase"] == "Promoted" and st["alias"] == "challenger"
    assert registry.aliases(model_name) == {"champion": v1, "challenger": v2}
    assert registry.tags(model_name, v2)["mlops.dev/promoted-alias"] == "challenger"
