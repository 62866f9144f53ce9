"""When a ModelDeployment pass applies a child again: its manifest changed, or someone changed
the child — not when only a Deployment's status moved."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from mlops_operator.handlers.md_children import _fingerprint, _unchanged, slim

KEY = ("Deployment", "ns", "md-champion")


def deployment(rv: str, generation: int = 1, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "md-champion", "namespace": "ns", "uid": "u1",
                         "resourceVersion": rv, "generation": generation,
                         "labels": {"mlops.dev/version": "3"},
                         "annotations": {"deployment.kubernetes.io/revision": "1"},
                         "ownerReferences": [{"uid": "md-uid"}]},
            "spec": {"replicas": 1}, "status": status}


def unchanged(seen: dict[str, Any] | None, applied: dict[str, Any], digest: str = "d") -> bool:
    p = SimpleNamespace(controller=SimpleNamespace(
        children_seen={} if seen is None else {KEY: slim(copy.deepcopy(seen))}))
    last = ("d", applied["metadata"]["resourceVersion"], _fingerprint(applied))
    return _unchanged(p, KEY, digest, last)  # type: ignore[arg-type]


def test_the_version_the_apply_returned_or_only_a_new_status_is_unchanged() -> None:
    applied = deployment("10")
    assert unchanged(deployment("10"), applied)
    # the Deployment controller: status, and its revision annotation when it makes a ReplicaSet
    assert unchanged(deployment("11", readyReplicas=1), applied)
    revised = deployment("12")
    revised["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    assert unchanged(revised, applied)


def test_a_spec_edit_new_metadata_a_recreation_or_a_new_manifest_is_applied() -> None:
    applied = deployment("10")
    assert not unchanged(deployment("12", generation=2), applied)  # kubectl scale, set image
    relabelled = deployment("12")
    relabelled["metadata"]["labels"] = {}
    assert not unchanged(relabelled, applied)
    annotated = deployment("12")
    annotated["metadata"]["annotations"]["team"] = "a"
    assert not unchanged(annotated, applied)
    recreated = deployment("12")
    recreated["metadata"]["uid"] = "u2"
    assert not unchanged(recreated, applied)
    assert not unchanged(None, applied)  # deleted (or not seen yet)
    assert not unchanged(deployment("10"), applied, digest="new manifest")


def test_a_kind_without_a_generation_counts_every_new_version() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "md-champion", "namespace": "ns", "resourceVersion": "10"}}
    assert _fingerprint(cm) is None
    p = SimpleNamespace(controller=SimpleNamespace(children_seen={
        KEY: {**cm, "metadata": {**cm["metadata"], "resourceVersion": "11"}}}))
    assert not _unchanged(p, KEY, "d", ("d", "10", None))  # type: ignore[arg-type]
