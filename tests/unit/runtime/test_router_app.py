"""The router end to end over loopback: real upstream HTTP servers, the router ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import uvicorn

from mlops_runtime.router.app import Router
from mlops_runtime.router.settings import RouterSettings


class Upstream:
    """A tiny ASGI server naming itself in each response and recording request bodies."""

    def __init__(self, name: str, status: int = 200, gate: asyncio.Event | None = None) -> None:
        self.name, self.status, self.gate = name, status, gate
        self.bodies: list[bytes] = []
        self.received = asyncio.Event()
        self.port = 0

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        self.received.set()
        if self.gate is not None:
            await self.gate.wait()
        payload = orjson.dumps({"upstream": self.name, "path": scope["path"]})
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def serving(app: Upstream) -> AsyncIterator[Upstream]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    app.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app
    finally:
        if app.gate is not None:
            app.gate.set()
        server.should_exit = True
        await task


async def call(router: Router, path: str = "/v2/models/iris/infer", body: bytes = b"{}",
               headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict, bytes]:  # fmt: skip
    """Invoke the router ASGI app in-process; returns status, headers, body."""
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": headers or []}  # fmt: skip
    sent = False
    out: dict = {}

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], dict(message["headers"])
        else:
            out["body"] = message["body"]

    await router(scope, receive, send)
    return out["status"], out["headers"], out["body"]


def write_config(path: Path, weights: dict[str, float], ups: dict[str, Upstream],
                 mirror: Upstream | None = None, sticky: str | None = "x-user") -> None:  # fmt: skip
    config: dict = {"variants": [
        {"name": n, "weight": w, "endpoints": [f"http://127.0.0.1:{ups[n].port}"]}
        for n, w in weights.items()]}  # fmt: skip
    if sticky:
        config["stickyHeader"] = sticky
    if mirror is not None:
        config["mirror"] = {"name": mirror.name, "endpoints": [f"http://127.0.0.1:{mirror.port}"]}
    path.write_text(json.dumps(config))


@contextlib.asynccontextmanager
async def router_for(path: Path, **settings: object) -> AsyncIterator[Router]:
    router = Router(RouterSettings(config=str(path), reload_interval_s=3600,
                                   discovery_interval_s=3600, **settings))  # fmt: skip
    await router.startup()
    try:
        yield router
    finally:
        await router.shutdown()


async def _spread(router: Router, n: int, key=None) -> list[str]:  # noqa: ANN001
    async def one(i: int) -> str:
        headers = [(b"x-user", key(i).encode())] if key else []
        status, h, body = await call(router, headers=headers)
        assert status == 200
        assert orjson.loads(body)["upstream"] == h[b"x-mlops-variant"].decode()
        return h[b"x-mlops-variant"].decode()

    out: list[str] = []
    for start in range(0, n, 100):  # bounded concurrency
        out += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
    return out


async def test_10000_requests_at_90_10(tmp_path: Path, scrape) -> None:  # noqa: ANN001
    async with serving(Upstream("a")) as a, serving(Upstream("b")) as b:
        write_config(tmp_path / "r.json", {"a": 90, "b": 10}, {"a": a, "b": b})
        async with router_for(tmp_path / "r.json") as router:
            counts = Counter(await _spread(router, 10_000))
            assert abs(counts["b"] / 10_000 - 0.10) <= 0.01
            assert len(a.bodies) + len(b.bodies) == 10_000
            sticky = Counter(await _spread(router, 10_000, key=lambda i: f"u{i}"))
            assert abs(sticky["b"] / 10_000 - 0.10) <= 0.01
            m = scrape((await call(router, "/metrics"))[2].decode())
            total = {v: m.value("mlops_router_requests_total", {"code": "200", "variant": v})
                     for v in "ab"}  # fmt: skip
            assert total == {"a": counts["a"] + sticky["a"], "b": counts["b"] + sticky["b"]}


async def test_sticky_keys_and_a_live_weight_change(tmp_path: Path) -> None:
    async with serving(Upstream("a")) as a, serving(Upstream("b")) as b:
        cfg = tmp_path / "r.json"
        write_config(cfg, {"a": 90, "b": 10}, {"a": a, "b": b})
        async with router_for(cfg) as router:
            keys = [f"user-{i}" for i in range(2000)]
            first = await _spread(router, 2000, key=lambda i: keys[i])
            assert await _spread(router, 2000, key=lambda i: keys[i]) == first  # 100% sticky
            write_config(cfg, {"a": 50, "b": 50}, {"a": a, "b": b})
            assert await router.reload_once()  # no restart
            after = await _spread(router, 2000, key=lambda i: keys[i])
            moved = [i for i in range(2000) if first[i] != after[i]]
            assert abs(len(moved) / 2000 - 0.40) <= 0.04
            assert all(first[i] == "a" and after[i] == "b" for i in moved)


async def test_mirror_gets_a_copy_and_cannot_affect_the_response(tmp_path: Path, scrape) -> None:  # noqa: ANN001
    gate = asyncio.Event()  # the mirror hangs until the test ends, then answers 500
    async with (serving(Upstream("a")) as a, serving(Upstream("b")) as b,
                serving(Upstream("shadow", status=500, gate=gate)) as shadow):  # fmt: skip
        write_config(tmp_path / "r.json", {"a": 1, "b": 0}, {"a": a, "b": b}, mirror=shadow)
        async with router_for(tmp_path / "r.json") as router:
            status, headers, body = await call(router, body=b'{"payload": 1}')
            assert status == 200 and orjson.loads(body)["upstream"] == "a"
            await asyncio.wait_for(shadow.received.wait(), 10)
            assert shadow.bodies == [b'{"payload": 1}'] and a.bodies == [b'{"payload": 1}']
            gate.set()
            for _ in range(500):  # wait for the mirror's 500 to be counted
                if router.mirror_in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            m = scrape((await call(router, "/metrics"))[2].decode())
            assert m.value("mlops_router_mirror_requests_total", {"result": "error"}) == 1.0


async def test_mirror_down_and_upstream_down(tmp_path: Path) -> None:
    async with serving(Upstream("a")) as a:
        cfg = tmp_path / "r.json"
        dead = Upstream("dead")
        dead.port = 1  # nothing listens on port 1
        write_config(cfg, {"a": 1}, {"a": a}, mirror=dead)
        async with router_for(cfg) as router:
            assert (await call(router))[0] == 200  # a dead mirror changes nothing
            write_config(cfg, {"dead": 1}, {"dead": dead})
            await router.reload_once()
            status, _, body = await call(router)
            assert status == 502 and "dead" in orjson.loads(body)["error"]


async def test_bad_config_keeps_the_last_good_one(tmp_path: Path) -> None:
    async with serving(Upstream("a")) as a:
        cfg = tmp_path / "r.json"
        write_config(cfg, {"a": 1}, {"a": a})
        async with router_for(cfg) as router:
            cfg.write_text("variants: [")
            assert not await router.reload_once()
            assert (await call(router))[0] == 200
            status = orjson.loads((await call(router, "/router/status"))[2])
            assert status["weights"] == {"a": 1.0} and status["ready"]
            assert (await call(router, "/router/ready"))[0] == 200


async def test_payload_limit_and_no_config(tmp_path: Path) -> None:
    async with serving(Upstream("a")) as a:
        write_config(tmp_path / "r.json", {"a": 1}, {"a": a})
        async with router_for(tmp_path / "r.json", max_request_bytes=10) as router:
            status, _, body = await call(router, body=b"x" * 11)
            assert status == 413 and a.bodies == []
            assert orjson.loads(body) == {"error": "payload exceeds the limit of 10 bytes"}
            status, _, _ = await call(router, body=b"x", headers=[(b"content-length", b"11")])
            assert status == 413 and a.bodies == []  # refused by its Content-Length
            assert (await call(router, body=b"x" * 10))[0] == 200
    async with router_for(tmp_path / "missing.json") as router:
        status, _, body = await call(router)
        assert status == 503 and "no valid config" in orjson.loads(body)["error"]
        assert (await call(router, "/router/ready"))[0] == 503


class FakeDiscovery:
    """Stands in for the Kubernetes API: service → ready endpoint URLs."""

    def __init__(self) -> None:
        self.services: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []

    def endpoints(self, namespace: str, service: str, port: object = None) -> list[str]:
        self.calls.append((namespace, service))
        return self.services.get(service, [])


async def test_service_endpoints_are_discovered_and_refreshed(tmp_path: Path) -> None:
    async with serving(Upstream("a1")) as a1, serving(Upstream("a2")) as a2:
        cfg = tmp_path / "r.json"
        cfg.write_text(
            json.dumps(
                {
                    "namespace": "models",
                    "variants": [{"name": "a", "weight": 1, "service": "iris-a"}],
                }
            )
        )
        discovery = FakeDiscovery()
        router = Router(RouterSettings(config=str(cfg), reload_interval_s=3600,
                                       discovery_interval_s=3600), discovery=discovery)  # fmt: skip
        await router.startup()
        try:
            assert (await call(router))[0] == 503  # no ready endpoints yet
            discovery.services["iris-a"] = [f"http://127.0.0.1:{a1.port}"]
            await router.discover_once()
            assert orjson.loads((await call(router))[2])["upstream"] == "a1"
            discovery.services["iris-a"].append(f"http://127.0.0.1:{a2.port}")
            await router.discover_once()
            seen = {orjson.loads((await call(router))[2])["upstream"] for _ in range(4)}
            assert seen == {"a1", "a2"}
            assert ("models", "iris-a") in discovery.calls
        finally:
            await router.shutdown()


@pytest.mark.parametrize("path", ["/router/healthz", "/metrics"])
async def test_local_endpoints(tmp_path: Path, path: str) -> None:
    async with router_for(tmp_path / "none.json") as router:
        assert (await call(router, path))[0] == 200


async def test_a_dead_endpoint_is_skipped_for_another_endpoint_of_the_variant(
    tmp_path: Path,
) -> None:
    """A pod going away (refused connection) must not fail requests while the variant has
    another endpoint; with no live endpoint left the client gets a 502 naming the variant."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with serving(Upstream("a")) as a:
        cfg = tmp_path / "r.json"
        cfg.write_text(json.dumps({"variants": [{"name": "a", "weight": 100, "endpoints": [
            f"http://127.0.0.1:{dead}", f"http://127.0.0.1:{a.port}"]}]}))
        async with router_for(cfg) as router:
            statuses = Counter([(await call(router))[0] for _ in range(20)])
            assert statuses == {200: 20} and len(a.bodies) == 20
        cfg.write_text(json.dumps({"variants": [{"name": "a", "weight": 100, "endpoints": [
            f"http://127.0.0.1:{dead}"]}]}))
        async with router_for(cfg) as router:
            status, _, body = await call(router)
            assert status == 502 and b"variant a" in body and b"cannot connect" in body


async def test_a_variant_without_a_live_endpoint_is_answered_by_another_variant(
    tmp_path: Path,
) -> None:
    """A canary whose pods are not there (yet, or any more) must not fail client requests while
    another variant can answer; only when no variant can is the answer an error."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with serving(Upstream("stable")) as stable:
        cfg = tmp_path / "r.json"
        cfg.write_text(json.dumps({"variants": [
            {"name": "stable", "weight": 50, "endpoints": [f"http://127.0.0.1:{stable.port}"]},
            {"name": "gone", "weight": 40, "endpoints": [f"http://127.0.0.1:{dead}"]},
            {"name": "empty", "weight": 10, "endpoints": []},
        ]}))
        async with router_for(cfg) as router:
            answers = [await call(router) for _ in range(40)]
            assert Counter(status for status, _, _ in answers) == {200: 40}
            assert {h[b"x-mlops-variant"] for _, h, _ in answers} == {b"stable"}
            assert len(stable.bodies) == 40
        cfg.write_text(json.dumps({"variants": [
            {"name": "gone", "weight": 60, "endpoints": [f"http://127.0.0.1:{dead}"]},
            {"name": "empty", "weight": 40, "endpoints": []},
        ]}))
        async with router_for(cfg) as router:
            # every path ends at the variant with an endpoint that refuses: a 502 naming it
            answers = [await call(router) for _ in range(10)]
            assert {status for status, _, _ in answers} == {502}
            assert all(b"variant gone" in body for _, _, body in answers)


async def test_when_every_known_endpoint_is_gone_the_router_rediscovers_before_failing(
    tmp_path: Path,
) -> None:
    """The pods of a rolling update replaced faster than discovery polls: one discovery on the
    spot finds the new pod and the request is answered."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with serving(Upstream("new")) as new:
        cfg = tmp_path / "r.json"
        cfg.write_text(json.dumps({"variants": [
            {"name": "a", "weight": 100, "service": "a", "port": 8080}]}))

        class Discovery:  # the Service's endpoints: the old pod, then (rediscovered) the new one
            calls = 0

            def endpoints(self, namespace: str, service: str, port: object) -> list[str]:
                Discovery.calls += 1
                url = dead if Discovery.calls == 1 else new.port
                return [f"http://127.0.0.1:{url}"]

        router = Router(RouterSettings(config=str(cfg), reload_interval_s=3600,
                                       discovery_interval_s=3600), discovery=Discovery())
        await router.startup()
        try:
            status, _, _ = await call(router)
            assert status == 200 and len(new.bodies) == 1 and Discovery.calls >= 2
        finally:
            await router.shutdown()


async def test_a_removed_variant_leaves_no_endpoint_series(tmp_path: Path, scrape) -> None:  # noqa: ANN001
    """A canary promoted or aborted takes its ``mlops_router_variant_endpoints`` series with it
    (a stale "1 endpoint" would outlive the variant on every dashboard)."""
    async with serving(Upstream("a")) as a, serving(Upstream("b")) as b:
        cfg = tmp_path / "r.json"
        write_config(cfg, {"a": 1, "b": 1}, {"a": a, "b": b})
        async with router_for(cfg) as router:
            await router.discover_once()
            before = scrape((await call(router, "/metrics"))[2].decode())
            assert before.value("mlops_router_variant_endpoints", {"variant": "b"}) == 1
            write_config(cfg, {"a": 1}, {"a": a})
            assert await router.reload_once()
            after = scrape((await call(router, "/metrics"))[2].decode())
            assert after.value("mlops_router_variant_endpoints", {"variant": "a"}) == 1
            assert after.value("mlops_router_variant_endpoints", {"variant": "b"}) is None
