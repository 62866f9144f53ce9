"""The optional validation Job: evaluates the model on a holdout set, logs metrics into the
run, then the gates check them. Runs on the node stand-in."""

from __future__ import annotations

from typing import Any

import pytest
from mvhelpers import checks_by_name

pytestmark = pytest.mark.integration

IMAGE = "ghcr.io/mlops-operator/mlops-runtime:0.1.0"


def test_validation_job_metrics_feed_the_gates(mv: Any, registry: Any, model_name: str,
                                               node: Any) -> None:
    version = registry.version(model_name, {"accuracy": 0.9}, log_model=True)
    run_id = registry.run_id(model_name, version)
    mv.apply("job-ok", {"model": model_name, "version": version, "validation": {
        "metrics": [{"name": "holdout_accuracy", "min": 0.8}],
        "slices": [{"name": "holdout-classes", "prefix": "holdout_accuracy_class_",
                    "floor": 0.5}],
        "job": {"image": IMAGE, "dataset": "sklearn://iris"},
    }})
    st = mv.wait_phase("job-ok", "Promoted", "Rejected", "Failed", timeout=120)
    assert st["phase"] == "Promoted", st
    checks = checks_by_name(st)
    assert checks["holdout_accuracy >= min"]["passed"]
    assert checks["holdout-classes floor"]["passed"]
    logged = registry.client.get_run(run_id).data.metrics
    assert {"holdout_accuracy", "holdout_f1_macro", "holdout_accuracy_class_0",
            "holdout_accuracy_class_2"} <= set(logged)
    assert st["primaryMetric"]["value"] == pytest.approx(logged["holdout_accuracy"])
    assert registry.aliases(model_name) == {"champion": version}
    job = mv.kubectl("get", "job", "-n", mv.namespace, "job-ok-validate", "-o",
                     "jsonpath={.metadata.ownerReferences[0].name}").stdout
    assert job == "job-ok"


def test_failed_validation_job_fails_with_the_termination_message(
    mv: Any, registry: Any, model_name: str, node: Any
) -> None:
    version = registry.version(model_name, {"accuracy": 0.9})
    mv.apply("job-bad", {"model": model_name, "version": version, "validation": {
        "metrics": [{"name": "accuracy", "min": 0.8}],
        "job": {"image": IMAGE, "dataset": "sklearn://no_such_set"},
    }})
    st = mv.wait_phase("job-bad", "Failed", "Promoted", "Rejected", timeout=120)
    assert st["phase"] == "Failed", st
    assert "unknown scikit-learn dataset 'no_such_set'" in st["message"]
    assert mv.condition("job-bad", "Ready")["reason"] == "ValidationJobFailed"
    assert registry.aliases(model_name) == {}
