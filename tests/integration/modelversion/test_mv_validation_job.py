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
    job = mv.kubectl("get", "job", "-n", mv.namespace, st["validationJob"], "-o",
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


def _jobs(mv: Any) -> dict[str, dict[str, Any]]:
    import json

    out = mv.kubectl("get", "jobs", "-n", mv.namespace, "-o", "json").stdout
    return {j["metadata"]["name"]: j for j in json.loads(out)["items"]
            if not j["metadata"].get("deletionTimestamp")}


def test_a_corrected_spec_runs_a_new_validation_job_and_the_old_one_is_deleted(
    mv: Any, registry: Any, model_name: str, node: Any
) -> None:
    version = registry.version(model_name, {"accuracy": 0.9}, log_model=True)
    spec = {"model": model_name, "version": version, "validation": {
        "metrics": [{"name": "holdout_accuracy", "min": 0.8}],
        "job": {"image": IMAGE, "dataset": "sklearn://no_such_set"},
    }}
    mv.apply("job-fix", spec)
    st = mv.wait_phase("job-fix", "Failed", "Promoted", "Rejected", timeout=120)
    assert st["phase"] == "Failed", st
    (failed_job,) = _jobs(mv)

    spec["validation"]["job"]["dataset"] = "sklearn://iris"  # the correction
    mv.apply("job-fix", spec)
    generation = mv.get("job-fix")["metadata"]["generation"]
    st = mv.wait("generation decided", lambda: (
        s if (s := mv.status("job-fix")).get("observedGeneration") == generation
        and s.get("phase") in ("Failed", "Promoted", "Rejected") else None), timeout=120)
    assert st["phase"] == "Promoted", st
    new_job = st["validationJob"]
    assert new_job != failed_job and st["validatedGeneration"] == generation
    assert _jobs(mv)[new_job]["status"].get("succeeded") == 1
    mv.wait(f"the superseded Job {failed_job} deleted",
            lambda: failed_job not in _jobs(mv), timeout=60)
    assert registry.aliases(model_name) == {"champion": version}

    # a change of the gates only: the Job's result still holds, the gates are evaluated again
    spec["validation"]["metrics"][0]["min"] = 0.99
    mv.apply("job-fix", spec)
    generation = mv.get("job-fix")["metadata"]["generation"]
    st = mv.wait("gates-only change decided", lambda: (
        s if (s := mv.status("job-fix")).get("validatedGeneration") == generation else None),
        timeout=60)
    assert st["validationJob"] == new_job and set(_jobs(mv)) == {new_job}
    assert checks_by_name(st)["holdout_accuracy >= min"]["threshold"] == 0.99


def test_a_long_failure_message_is_clipped_in_status_and_kept_in_the_condition(
    mv: Any, registry: Any, model_name: str, node: Any
) -> None:
    version = registry.version(model_name, {"accuracy": 0.9})
    # 20 long lines on stdout, then exit 1: the pod's termination message is the log's tail
    script = "for i in range(20): print(f'line {i:02d} ' + 'x' * 150)\nraise SystemExit(1)"
    mv.apply("job-long", {"model": model_name, "version": version, "validation": {
        "metrics": [{"name": "accuracy", "min": 0.8}],
        "job": {"image": IMAGE, "command": ["python", "-c", script]},
    }})
    st = mv.wait_phase("job-long", "Failed", "Promoted", "Rejected", timeout=120)
    assert st["phase"] == "Failed", st
    assert st["message"].startswith(f"validation Job {st['validationJob']} failed: ")
    assert len(st["message"]) <= 1024 and st["message"].endswith("...")
    ready = mv.condition("job-long", "Ready")
    assert ready["reason"] == "ValidationJobFailed" and "line 19 " in ready["message"]
