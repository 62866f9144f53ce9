"""controller.py without a cluster: kopf's pause toggles stop the work queue's workers; kopf's
success lines of the watches are DEBUG; the settings say what is missing."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from kopf._cogs.aiokits.aiotoggles import Toggle

from mlops_operator.controller import PEERING, Controller, Pass, Status, quiet
from mlops_operator.settings import OperatorSettings


def body(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}",
                         "resourceVersion": "1", "generation": 1}}


async def test_workers_run_no_pass_while_kopf_pauses_this_replica() -> None:
    ran: list[str] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reconcile(p: Pass) -> None:
        ran.append(p.name)
        loop.call_soon_threadsafe(done.set)

    ctl = Controller("Thing", "things", reconcile)
    await ctl.start(workers=2)
    paused = Toggle(True, name="peering@ns")
    PEERING.watch(paused)
    try:
        ctl._spawn_workers()
        ctl.observe("ADDED", body("a"))
        ctl.enqueue(("ns", "a"), delay=0.01)  # a timer firing during the pause, too
        while ("ns", "a") in ctl._queue._timers:  # until the timer has fired
            await asyncio.sleep(0.005)
        for _ in range(50):  # let every task run as far as it can
            await asyncio.sleep(0)
        assert ran == []
        assert len(ctl._queue) == 1  # kept for later, once
        await paused.turn_to(False)
        await asyncio.wait_for(done.wait(), timeout=30)
        assert ran == ["a"]
    finally:
        await paused.turn_to(False)
        await ctl.stop()


async def test_a_key_taken_as_the_pause_starts_goes_back_to_the_queue() -> None:
    started = threading.Event()
    ctl = Controller("Thing", "things", lambda p: started.set())
    await ctl.start(workers=1)
    paused = Toggle(False, name="peering@ns")
    PEERING.watch(paused)
    try:
        ctl._spawn_workers()
        for _ in range(20):
            await asyncio.sleep(0)  # the worker waits for a key, not paused
        await paused.turn_to(True)
        ctl.observe("ADDED", body("b"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not started.is_set() and len(ctl._queue) == 1
    finally:
        await paused.turn_to(False)
        await ctl.stop()


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_watch_successes_are_debug_and_errors_stay(level: int,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    quiet("kopf.objects", "Handler", "Thing-children")
    kopf_objects = logging.getLogger("kopf.objects")
    with caplog.at_level(level, logger="kopf.objects"):
        kopf_objects.info("Handler 'Thing-children' succeeded.")
        kopf_objects.info("Handler 'other' succeeded.")
        kopf_objects.error("Handler 'Thing-children' failed with an exception.")
    seen = [(r.levelname, r.getMessage()) for r in caplog.records]
    quieted = [("DEBUG", "Handler 'Thing-children' succeeded.")] if level == logging.DEBUG else []
    assert seen == [*quieted, ("INFO", "Handler 'other' succeeded."),
                    ("ERROR", "Handler 'Thing-children' failed with an exception.")]


@pytest.mark.parametrize("uri", ["", "  "])
def test_no_tracking_uri_is_missing_and_named(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", uri)
    assert "MLOPS_MLFLOW_TRACKING_URI" in (OperatorSettings().missing or "")
    monkeypatch.delenv("MLOPS_MLFLOW_TRACKING_URI")
    assert "MLOPS_MLFLOW_TRACKING_URI" in (OperatorSettings().missing or "")
    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert OperatorSettings().missing is None


@pytest.mark.parametrize("error", ["read-timeout", "unreachable", "503"])
def test_an_apiserver_that_times_out_is_a_warning_and_a_backoff_not_a_traceback(
    error: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    from mlops_operator.controller import BACKOFF
    from mlops_operator.metrics import RECONCILE_ERRORS

    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    exc = {
        "read-timeout": ReadTimeoutError(None, "/apis/batch/v1/jobs", "Read timed out."),
        "unreachable": MaxRetryError(None, "/apis/batch/v1/jobs", "Connection refused"),
        "503": ApiException(status=503, reason="Service Unavailable"),
    }[error]

    def reconcile(p: Pass) -> None:
        raise exc

    ctl = Controller("Thing", "things", reconcile)
    counted = RECONCILE_ERRORS.labels(kind="Thing", error="apiserver")
    before = counted._value.get()
    with caplog.at_level(logging.INFO, logger="mlops_operator.controller"):
        first = ctl._pass(("ns", "a"), body("a"))
        second = ctl._pass(("ns", "a"), body("a"))
    assert (first, second) == (BACKOFF[0], BACKOFF[1])
    assert counted._value.get() == before + 2
    lines = [r for r in caplog.records if "API server unavailable" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING]
    assert not any(r.exc_info for r in caplog.records)


async def test_stop_lets_a_running_pass_finish_before_it_returns() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def reconcile(p: Pass) -> None:
        started.set()
        release.wait(timeout=30)
        finished.append(p.name)

    ctl = Controller("Thing", "things", reconcile)
    await ctl.start(workers=1)
    ctl._spawn_workers()
    ctl.observe("ADDED", body("a"))
    assert await asyncio.to_thread(started.wait, 30)
    stopping = asyncio.create_task(ctl.stop(grace=30))
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done and finished == []  # stop() waits for the pass
    release.set()
    await asyncio.wait_for(stopping, timeout=30)
    assert finished == ["a"]


def job(name: str, rv: str, uid: str = "job-uid", owner: str = "a") -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv,
                         "managedFields": [{"manager": "kube-controller-manager"}],
                         "ownerReferences": [{"apiVersion": "mlops.dev/v1alpha1",
                                              "kind": "Thing", "name": owner}]}}


async def test_a_pass_reads_its_child_as_the_watch_last_saw_it_never_an_older_one() -> None:
    ctl = Controller("Thing", "things", lambda p: None)
    await ctl.start(1)
    try:
        p = Pass(body("a"), Status(body("a")), OperatorSettings(), logging.getLogger(),  # type: ignore[arg-type]
                 controller=ctl)
        assert p.child("Job", "a-train") is None  # not seen: the pass asks the API
        p.saw_child(job("a-train", "5"))  # what the pass's own create returned
        await ctl._on_child_event({"type": "ADDED"}, job("a-train", "4"))  # an older event
        seen = p.child("Job", "a-train")
        assert seen is not None and seen["metadata"]["resourceVersion"] == "5"
        assert "managedFields" not in seen["metadata"]
        await ctl._on_child_event({"type": "MODIFIED"}, job("a-train", "7"))
        assert p.child("Job", "a-train")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
        p.child("Job", "a-train")["metadata"]["name"] = "changed"  # type: ignore[index]
        assert p.child("Job", "a-train")["metadata"]["name"] == "a-train"  # type: ignore[index]
        # a Job recreated under the same name is taken whatever its resourceVersion
        await ctl._on_child_event({"type": "ADDED"}, job("a-train", "2", uid="new"))
        assert p.child("Job", "a-train")["metadata"]["uid"] == "new"  # type: ignore[index]
        await ctl._on_child_event({"type": "DELETED"}, job("a-train", "8", uid="new"))
        assert p.child("Job", "a-train") is None
        # a child that names no owner of this kind is not kept
        await ctl._on_child_event({"type": "ADDED"}, {**job("b-train", "1"), "metadata": {
            **job("b-train", "1")["metadata"], "ownerReferences": []}})
        assert ctl.children_seen == {}
    finally:
        await ctl.stop()


@pytest.mark.parametrize(("method", "url", "kind"), [
    ("GET", "https://127.0.0.1:6443/api/v1/namespaces/ns/pods?labelSelector=a%3Db",
     ("list", "pods")),
    ("GET", "https://127.0.0.1:6443/apis/batch/v1/namespaces/ns/jobs/a-train", ("get", "jobs")),
    ("POST", "https://127.0.0.1:6443/apis/batch/v1/namespaces/ns/jobs", ("create", "jobs")),
    ("PATCH", "https://127.0.0.1:6443/apis/mlops.dev/v1alpha1/namespaces/ns/trainingruns/a/status",
     ("patch", "trainingruns/status")),
    ("DELETE", "https://127.0.0.1:6443/apis/batch/v1/namespaces/ns/jobs/a-train",
     ("delete", "jobs")),
    ("GET", "https://127.0.0.1:6443/api/v1/namespaces/ns", ("get", "namespaces")),
    ("POST", "https://127.0.0.1:6443/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
     ("create", "selfsubjectaccessreviews")),
])
def test_requests_are_counted_by_the_apiservers_verb_and_resource(
        method: str, url: str, kind: tuple[str, str]) -> None:
    from mlops_operator.kube import request_kind

    assert request_kind(method, url) == kind


def test_mlflow_unavailable_retries_after_1_2_5_s_up_to_its_delay_and_a_success_resets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-off 500 of a busy MLflow costs the object a second, not the outage's 10 s; an
    outage settles at the error's delay; a fixed-delay TemporaryError keeps its delay."""
    import httpx
    import kopf

    from mlops_operator.mlflow_utils import mlflow_errors

    monkeypatch.setenv("MLOPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    outcome: list[str] = []

    def reconcile(p: Pass) -> None:
        what = outcome.pop(0)
        if what == "down":
            with mlflow_errors("creating the MLflow run"):
                raise httpx.ConnectError("connection refused")
        if what == "waiting":
            raise kopf.TemporaryError("waiting for the old Job", delay=7)

    ctl = Controller("Thing", "things", reconcile)
    outcome[:] = ["down"] * 6 + ["ok", "down", "waiting", "waiting"]
    delays = [ctl._pass(("ns", "a"), body("a")) for _ in range(len(outcome))]
    assert delays == [1.0, 2.0, 5.0, 10.0, 10.0, 10.0, None, 1.0, 7.0, 7.0]


def test_no_kopf_handler_needs_a_diff_base() -> None:
    """handlers/startup.py stores no diff base (it cost a PATCH per object): only kopf's
    ``on.delete`` may be a changing handler. A create/update/field/resume handler needs kopf's
    annotation storage back."""
    import kopf
    from kopf._core.intents.causes import Reason

    import mlops_operator.handlers  # noqa: F401  (registers the handlers)

    handlers = kopf.get_default_registry()._changing.get_all_handlers()
    assert handlers, "the TrainingRun's on.delete handler is registered"
    assert {h.reason for h in handlers} == {Reason.DELETE}, [h.id for h in handlers]
    # that kopf writes no diff base is asserted on a real apiserver (test_trainingrun_requests)


async def test_a_relisted_version_is_not_queued_again_and_a_new_one_is() -> None:
    """kopf lists everything again after a 410 (kopf #585's reconnects): a version the
    controller has queued once brings no second pass; a newer one, or a new object under the
    same name (another uid), does."""
    ctl = Controller("Thing", "things", lambda p: None)
    await ctl.start(workers=1)
    try:
        queue = ctl._queue
        assert queue is not None
        ctl.observe("ADDED", body("a"))
        assert len(queue) == 1
        queue.done(await queue.get())
        ctl.observe("MODIFIED", body("a"))  # the same resourceVersion, listed again
        assert len(queue) == 0
        newer = body("a")
        newer["metadata"]["resourceVersion"] = "2"
        ctl.observe("MODIFIED", newer)
        assert len(queue) == 1
        queue.done(await queue.get())
        recreated = body("a")
        recreated["metadata"].update(uid="uid-a-2", resourceVersion="2")
        ctl.observe("ADDED", recreated)
        assert len(queue) == 1
    finally:
        await ctl.stop()


async def test_a_pass_of_a_replica_paused_meanwhile_stops_before_creating_anything() -> None:
    """HA handover: kopf pauses this replica while one of its passes runs; the pass ends at its
    next ``ensure_active`` (before an MLflow run or a Job is created) and writes nothing."""
    from mlops_operator.controller import Waiting

    ctl = Controller("Thing", "things", lambda p: None)
    await ctl.start(1)
    paused = Toggle(False, name="peering@ns")
    PEERING.watch(paused)
    try:
        p = Pass(body("a"), Status(body("a")), OperatorSettings(), logging.getLogger(),  # type: ignore[arg-type]
                 controller=ctl)
        p.status.set(phase="Pending")
        p.ensure_active()  # active: goes on
        assert p.status.changes
        await paused.turn_to(True)
        with pytest.raises(Waiting):
            p.ensure_active()
        assert p.status.changes == {}
    finally:
        await paused.turn_to(False)
        await ctl.stop()


async def test_a_slim_controller_keeps_what_its_passes_read_and_drops_the_rest() -> None:
    from mlops_operator.handlers.md_children import slim

    ctl = Controller("Thing", "things", lambda p: None, slim=slim)
    await ctl.start(1)
    try:
        dep = job("a-champion", "3")
        dep.update(kind="Deployment", apiVersion="apps/v1",
                   spec={"replicas": 2, "template": {"spec": {"containers": [{"env": []}]}}},
                   status={"readyReplicas": 1})
        dep["metadata"].update(generation=4, labels={"mlops.dev/version": "7"},
                               annotations={"big": "x" * 1000})
        await ctl._on_child_event({"type": "ADDED"}, dep)
        kept = ctl.children_seen[("Deployment", "ns", "a-champion")]
        assert kept["spec"] == {"replicas": 2} and kept["status"] == {"readyReplicas": 1}
        assert set(kept["metadata"]) == {"name", "namespace", "uid", "resourceVersion",
                                         "generation", "labels", "annotations",
                                         "ownerReferences"}
        svc = {**job("a", "5"), "kind": "Service", "spec": {"ports": []}, "status": {}}
        svc["metadata"]["annotations"] = {"big": "x" * 1000}
        await ctl._on_child_event({"type": "ADDED"}, svc)
        kept = ctl.children_seen[("Service", "ns", "a")]
        assert set(kept) == {"apiVersion", "kind", "metadata"}
        assert "annotations" not in kept["metadata"]
        await ctl._on_child_event({"type": "DELETED"}, svc)
        assert ("Service", "ns", "a") not in ctl.children_seen
    finally:
        await ctl.stop()
