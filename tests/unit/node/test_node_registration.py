"""The Node object and status the stand-in registers."""

from __future__ import annotations

from mlops_localstack.node.registration import node_manifest, node_selector_matches, node_status


def test_node_status_is_ready_and_keeps_transition_times() -> None:
    first = node_status("n", {"cpu": "2", "memory": "1Gi", "pods": "110"}, "127.0.0.1", now="T0")
    conds = {c["type"]: c for c in first["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["MemoryPressure"]["status"] == "False"
    assert first["allocatable"] == first["capacity"] == {"cpu": "2", "memory": "1Gi",
                                                          "pods": "110"}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in first["addresses"]
    assert first["nodeInfo"]["kubeletVersion"]
    later = node_status("n", first["capacity"], "127.0.0.1", previous=first, now="T1")
    ready = {c["type"]: c for c in later["conditions"]}["Ready"]
    assert ready["lastHeartbeatTime"] == "T1"
    assert ready["lastTransitionTime"] == "T0"


def test_manifest_and_node_selector() -> None:
    labels = {"kubernetes.io/hostname": "n", "kubernetes.io/os": "linux"}
    assert node_manifest("n", labels)["metadata"]["labels"] == labels
    assert node_selector_matches({"spec": {}}, labels)
    assert node_selector_matches({"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}, labels)
    assert not node_selector_matches({"spec": {"nodeSelector": {"gpu": "a100"}}}, labels)
