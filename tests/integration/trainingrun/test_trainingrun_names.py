"""A ModelVersion name that is already taken by someone else's object is never hijacked."""

from __future__ import annotations

from typing import Any

import pytest
from trhelpers import Kube, example

pytestmark = pytest.mark.integration


def test_taken_modelversion_name_gets_a_deterministic_alternative(
    node: Any, operator: Any, kube: Kube, namespace: str
) -> None:
    # a hand-written ModelVersion already holds the name the TrainingRun would use
    kube.apply({
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "taken-v1"},
        "spec": {"model": "someone-else", "version": "9"},
    })
    kube.apply(example("taken-train", model="taken", experiment="taken"))
    tr = kube.wait_terminal("taken-train")
    assert tr["status"]["phase"] == "Succeeded", tr["status"]
    uid = tr["metadata"]["uid"]
    ref = tr["status"]["modelVersion"]
    assert ref == {"version": "1", "name": f"taken-v1-{uid[:5]}"}

    ours = kube.get("modelversion", ref["name"])
    assert ours["spec"]["model"] == "taken" and ours["spec"]["version"] == "1"
    assert ours["metadata"]["ownerReferences"][0]["uid"] == uid
    theirs = kube.get("modelversion", "taken-v1")
    assert theirs["spec"] == {**theirs["spec"], "model": "someone-else", "version": "9"}
    assert "ownerReferences" not in theirs["metadata"]
    reasons = {e["reason"] for e in kube.events("taken-train")}
    assert "ModelVersionNameTaken" in reasons
