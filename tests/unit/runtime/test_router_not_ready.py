"""A model server that is not ready (restarted, loading its model) or gone, while the router
still has it in rotation (discovery lags by up to its poll period): the request goes to another
endpoint of the variant, or another variant, and the endpoint is ejected for a while; the "not
ready" answers are not counted as server errors of the model. A model that raises is still a
500, passed through and counted as a server error (issue 13: a canary pod killed mid-canary
must not roll a good candidate back, a bad candidate still must be)."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlops_runtime.metrics import RuntimeMetrics
from mlops_runtime.router.app import Router
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.router.state import Targets

ROWS = [[5.1, 3.5, 1.4, 0.2]]


def start_router(serve_asgi: Callable[..., Any], tmp_path: Path,
                 variants: list[dict[str, Any]], **settings: Any) -> str:  # fmt: skip
    config = tmp_path / "router.json"
    config.write_text(json.dumps({"variants": variants}))
    router = Router(RouterSettings(config=str(config), reload_interval_s=3600,
                                   discovery_interval_s=3600, **settings))  # fmt: skip
    return f"http://127.0.0.1:{serve_asgi(router, lifespan='on').port}"


def dead_port() -> int:
    """A loopback port nobody listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def infer(url: str, body: str, n: int) -> list[httpx.Response]:
    with httpx.Client(timeout=30) as client:
        return [client.post(f"{url}/v2/models/iris/infer", content=body) for _ in range(n)]


def test_a_not_ready_pod_in_rotation_costs_no_failed_request_and_no_server_error(
    start_server, serve_asgi, iris_loaded, infer_body, scrape, tmp_path: Path,  # noqa: ANN001
) -> None:
    """The restarted canary pod answers 503 while loading: every client request is answered
    by the ready pod of the same variant, the loading one gets a single request (then it is
    ejected) and counts it as ``unavailable``, not as a ``server`` error."""
    ready = start_server(iris_loaded, model_name="iris")
    loading = start_server(None, model_name="iris")  # never ready: 503 "model not ready"
    url = start_router(serve_asgi, tmp_path, [{"name": "canary", "weight": 100, "endpoints": [
        f"http://{loading.http}", f"http://{ready.http}"]}], ejection_s=3600)  # fmt: skip
    answers = infer(url, infer_body(ROWS), 30)
    assert Counter(r.status_code for r in answers) == {200: 30}
    assert {r.headers["x-mlops-variant"] for r in answers} == {"canary"}

    router_metrics = scrape(httpx.get(f"{url}/metrics").text)
    ejections = {"variant": "canary", "reason": "unavailable"}
    assert router_metrics.value("mlops_router_endpoint_ejections_total", ejections) == 1.0
    assert router_metrics.value("mlops_router_requests_total",
                                {"variant": "canary", "code": "200"}) == 30.0  # fmt: skip
    assert router_metrics.value("mlops_router_requests_total",
                                {"variant": "canary", "code": "503"}) is None  # fmt: skip

    runtime = scrape(httpx.get(f"http://{loading.http}/metrics").text)
    errors = {s.labels["kind"]: s.value for s in runtime.series("mlops_runtime_errors_total")
              if s.labels["endpoint"] == "infer"}  # fmt: skip
    assert errors == {"unavailable": 1.0}, errors


def test_a_variant_with_no_ready_pod_is_answered_by_another_and_alone_passes_the_503_on(
    start_server, serve_asgi, iris_loaded, infer_body, tmp_path: Path,  # noqa: ANN001
) -> None:
    ready = start_server(iris_loaded, model_name="iris")
    loading = start_server(None, model_name="iris")
    url = start_router(serve_asgi, tmp_path, [
        {"name": "champion", "weight": 70, "endpoints": [f"http://{ready.http}"]},
        {"name": "canary", "weight": 30, "endpoints": [f"http://{loading.http}"]}])
    answers = infer(url, infer_body(ROWS), 20)
    assert Counter(r.status_code for r in answers) == {200: 20}
    assert {r.headers["x-mlops-variant"] for r in answers} == {"champion"}

    # nobody ready at all: the model server's own 503 (forwarded, tagged), not a router 502
    alone = start_router(serve_asgi, tmp_path, [
        {"name": "canary", "weight": 100, "endpoints": [f"http://{loading.http}"]}])
    (answer,) = infer(alone, infer_body(ROWS), 1)
    assert answer.status_code == 503 and answer.headers["x-mlops-variant"] == "canary"
    assert "not ready" in answer.json()["error"]


def test_a_refused_endpoint_is_ejected_and_a_raising_model_is_still_a_counted_500(
    start_server, serve_asgi, iris_loaded, infer_body, scrape, tmp_path: Path,  # noqa: ANN001
) -> None:
    ready = start_server(iris_loaded, model_name="iris")
    url = start_router(serve_asgi, tmp_path, [{"name": "a", "weight": 100, "endpoints": [
        f"http://127.0.0.1:{dead_port()}", f"http://{ready.http}"]}], ejection_s=3600)  # fmt: skip
    assert Counter(r.status_code for r in infer(url, infer_body(ROWS), 20)) == {200: 20}
    router_metrics = scrape(httpx.get(f"{url}/metrics").text)
    assert router_metrics.value("mlops_router_endpoint_ejections_total",
                                {"variant": "a", "reason": "unreached"}) == 1.0  # fmt: skip

    def boom(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("a bad model")

    bad_model = dataclasses.replace(iris_loaded, methods={**iris_loaded.methods, "predict": boom})
    bad = start_server(bad_model, model_name="iris")
    ok = start_server(iris_loaded, model_name="iris")
    url = start_router(serve_asgi, tmp_path, [{"name": "bad", "weight": 100, "endpoints": [
        f"http://{bad.http}", f"http://{ok.http}"]}], ejection_s=3600)  # fmt: skip
    statuses = Counter(r.status_code for r in infer(url, infer_body(ROWS), 10))
    assert statuses == {500: 5, 200: 5}, statuses  # not retried, not ejected
    runtime = scrape(httpx.get(f"http://{bad.http}/metrics").text)
    errors = {s.labels["kind"]: s.value for s in runtime.series("mlops_runtime_errors_total")
              if s.labels["endpoint"] == "infer"}  # fmt: skip
    assert errors == {"server": 5.0}, errors


def test_ejection_skips_an_endpoint_until_it_expires_or_discovery_re_adds_it() -> None:
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    targets = Targets()
    targets.set(["http://127.0.0.1:1", "http://127.0.0.1:2"])
    targets.eject(a, 3600)
    assert {targets.pick() for _ in range(6)} == {b}
    targets.eject(b, 3600)
    assert targets.pick() in {a, b}  # all ejected: still an endpoint to try
    targets.set(["http://127.0.0.1:2"])  # a left discovery (not ready) ...
    targets.set(["http://127.0.0.1:1", "http://127.0.0.1:2"])  # ... and is back, ready
    assert {targets.pick() for _ in range(6)} == {a}
    targets.eject(a, 0)  # 0: no ejection
    assert {targets.pick() for _ in range(6)} == {a}


def test_runtime_counts_not_ready_as_unavailable_and_5xx_as_server() -> None:
    metrics = RuntimeMetrics("v")
    for code in (200, 400, 500, 503, 503):
        metrics.observe_request("infer", code, 0.01)
    kinds = {kind: metrics.registry.get_sample_value(
        "mlops_runtime_errors_total", {"model": "", "version": "", "variant": "v",
                                       "endpoint": "infer", "kind": kind})
        for kind in ("client", "server", "unavailable")}  # fmt: skip
    assert kinds == {"client": 1.0, "server": 1.0, "unavailable": 2.0}


async def test_a_variant_removed_while_discovery_looks_it_up_is_no_error(tmp_path: Path) -> None:
    """A canary promoted (its variant gone from the config) while discovery waits for the API
    server: the look-up's result is dropped. It raised KeyError before — out of a request that
    was rediscovering (the client got a 500, seen in test_md_rollouts) or out of the periodic
    discovery loop (which then stopped for good)."""
    import asyncio
    import threading

    started, release = threading.Event(), threading.Event()

    class Discovery:  # the API server answering slowly
        def endpoints(self, namespace: str, service: str, port: object) -> list[str]:
            started.set()
            release.wait(30)
            return ["http://127.0.0.1:9"]

    both = {"variants": [{"name": "champion", "weight": 100, "endpoints": ["http://127.0.0.1:8"]},
                         {"name": "champion-canary", "weight": 0, "service": "canary"}]}
    config = tmp_path / "router.json"
    config.write_text(json.dumps(both))
    router = Router(RouterSettings(config=str(config), reload_interval_s=3600,
                                   discovery_interval_s=3600), discovery=Discovery())  # fmt: skip
    router._apply_text(config.read_text())
    lookup = asyncio.create_task(router.discover_once())
    await asyncio.to_thread(started.wait, 30)
    router._apply_text(json.dumps({"variants": both["variants"][:1]}))  # the canary promoted
    release.set()
    await lookup
    assert router.state is not None and set(router.state.targets) == {"champion"}
