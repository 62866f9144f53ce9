"""Pure retrain decisions: the TrainingRun an alert builds, dedupe, cooldown, maxConcurrent,
and ``status.lastRetrain``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlops_operator.alerts.payload import parse_notification
from mlops_operator.alerts.retrain import (
    ANN_ALERT_NAME,
    ANN_ALERT_STARTS_AT,
    ANN_RETRAIN_STARTED,
    LABEL_ALERT_EPISODE,
    LABEL_ALERT_FINGERPRINT,
    build_retrain_trainingrun,
    cooldown_remaining,
    decide,
    isoformat,
    last_retrain,
    trainingrun_name,
)
from mlops_operator.api import TrainingRunSpec
from mlops_operator.builders.common import LABEL_DEPLOYMENT

NOW = datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
TEMPLATE = {"model": "iris", "image": "img", "args": ["--model", "iris"],
            "dataset": {"uri": "builtin://iris"}, "backoffLimit": 1}


def md(name: str = "iris", **retrain: Any) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ml", "uid": "uid-1"},
            "spec": {"model": "iris", "retrain": {"alerts": ["ModelFeatureDrift"],
                                                  "template": TEMPLATE, "cooldown": "1h",
                                                  "maxConcurrent": 1, **retrain}}}


def alert(starts: str = "2026-11-30T04:59:00Z", fingerprint: str = "a1b2c3d4e5f60718"):  # noqa: ANN201
    body = {"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "ModelFeatureDrift"},
        "startsAt": starts, "fingerprint": fingerprint}]}
    return parse_notification(json.dumps(body).encode()).alerts[0]


def tr(name: str, started: datetime | None, phase: str | None = None, episode: str | None = "e",
       deleting: bool = False) -> dict[str, Any]:
    labels = {LABEL_DEPLOYMENT: "iris"}
    annotations = {ANN_ALERT_NAME: "ModelFeatureDrift"}
    if episode:
        labels[LABEL_ALERT_EPISODE] = episode
    if started:
        annotations[ANN_RETRAIN_STARTED] = isoformat(started)
    meta: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations,
                            "creationTimestamp": "2026-11-29T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase} if phase else {}}


def test_the_trainingrun_is_the_template_with_lineage_and_an_owner() -> None:
    a = alert()
    out = build_retrain_trainingrun(md(), a, NOW)
    meta = out["metadata"]
    assert out["kind"] == "TrainingRun" and out["spec"] == TEMPLATE
    assert out["spec"] is not TEMPLATE
    assert meta["name"] == f"iris-retrain-{a.episode}" == trainingrun_name("iris", a)
    assert meta["namespace"] == "ml"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "mlops-operator", LABEL_DEPLOYMENT: "iris",
        "mlops.dev/model": "iris", LABEL_ALERT_FINGERPRINT: "a1b2c3d4e5f60718",
        LABEL_ALERT_EPISODE: a.episode}
    assert meta["annotations"][ANN_ALERT_NAME] == "ModelFeatureDrift"
    assert meta["annotations"][ANN_ALERT_STARTS_AT] == "2026-11-30T04:59:00.000000000Z"
    assert meta["annotations"][ANN_RETRAIN_STARTED] == "2026-11-30T05:00:00.000000Z"
    [ref] = meta["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "ModelDeployment", "iris", "uid-1", True)
    TrainingRunSpec.model_validate(out["spec"])


def test_names_are_deterministic_per_episode_and_fit_in_63_characters() -> None:
    long = "a" * 60
    names = {trainingrun_name(long, alert(starts=f"2026-11-30T04:{m:02d}:00Z"))
             for m in range(10)}
    assert len(names) == 10
    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)
    assert trainingrun_name(long, alert()) == trainingrun_name(long, alert())
    labels = build_retrain_trainingrun(md(long), alert(), NOW)["metadata"]["labels"]
    assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values())


def test_the_same_episode_is_a_duplicate_even_outside_cooldown() -> None:
    a = alert()
    runs = [tr("old", NOW - timedelta(days=3), "Succeeded", episode=a.episode)]
    d = decide(runs, a.episode, md()["spec"]["retrain"], NOW)
    assert (d.action, d.reason, d.existing) == ("skip", "duplicate", "old")


@pytest.mark.parametrize(
    ("age", "cooldown", "action"),
    [
        (timedelta(minutes=59), "1h", "skip"),
        (timedelta(minutes=61), "1h", "create"),
        (timedelta(seconds=1), "2s", "skip"),
        (timedelta(seconds=2), "2s", "create"),
        (timedelta(seconds=1, milliseconds=999), "2s", "skip"),
        (timedelta(minutes=29), "30m", "skip"),
        (timedelta(hours=2), "1h30m", "create"),
    ],
)
def test_cooldown_counts_from_the_newest_alert_started_run(age: timedelta, cooldown: str,
                                                           action: str) -> None:
    runs = [tr("older", NOW - timedelta(days=1), "Succeeded"),
            tr("newest", NOW - age, "Succeeded")]
    d = decide(runs, "new-episode", md(cooldown=cooldown, maxConcurrent=5)["spec"]["retrain"],
               NOW)
    assert d.action == action
    if action == "skip":
        assert d.reason == "cooldown" and "left" in d.message


def test_cooldown_remaining_math() -> None:
    runs = [tr("a", NOW - timedelta(minutes=10)), tr("b", NOW - timedelta(minutes=40))]
    assert cooldown_remaining(runs, timedelta(hours=1), NOW) == timedelta(minutes=50)
    assert cooldown_remaining(runs, timedelta(minutes=5), NOW) == timedelta(0)
    assert cooldown_remaining([], timedelta(hours=1), NOW) == timedelta(0)
    # runs not started by an alert do not start a cooldown
    manual = [tr("m", NOW, episode=None)]
    assert cooldown_remaining(manual, timedelta(hours=1), NOW) == timedelta(0)


def test_creation_timestamp_when_the_annotation_is_missing() -> None:
    run = tr("a", None)
    run["metadata"]["creationTimestamp"] = "2026-11-30T04:59:30Z"
    assert cooldown_remaining([run], timedelta(minutes=1), NOW) == timedelta(seconds=30)


def test_max_concurrent_counts_unfinished_runs_of_the_deployment() -> None:
    spec = md(cooldown="0s", maxConcurrent=2)["spec"]["retrain"]
    old = NOW - timedelta(hours=5)
    running = [tr("r1", old, "Running"), tr("r2", old, None, episode=None)]  # manual runs count
    d = decide(running, "new", spec, NOW)
    assert (d.action, d.reason) == ("skip", "max-concurrent")
    assert "r1, r2" in d.message
    finished = [tr("r1", old, "Succeeded"), tr("r2", old, "Failed"), tr("r3", old, "Pending"),
                tr("r4", old, "Running", deleting=True)]
    assert decide(finished, "new", spec, NOW).action == "create"


def test_last_retrain_is_the_newest_alert_started_run() -> None:
    runs = [tr("a", NOW - timedelta(hours=2)), tr("b", NOW - timedelta(minutes=1)),
            tr("manual", NOW, episode=None)]
    assert last_retrain(runs) == {"time": "2026-11-30T04:59:00Z", "alert": "ModelFeatureDrift",
                                  "trainingRun": "b"}
    assert last_retrain([]) is None
    assert last_retrain([tr("manual", NOW, episode=None)]) is None


def test_last_retrain_fits_the_status_model() -> None:
    from mlops_operator.api.modeldeployment import RetrainStatus

    out = last_retrain([tr("b", NOW)])
    assert out is not None
    status = RetrainStatus.model_validate(out)
    assert status.training_run == "b"
