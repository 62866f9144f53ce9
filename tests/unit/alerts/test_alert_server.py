"""The receiver's HTTP contract without a cluster: auth, limits, error bodies, what reaches the
retrainer (a recording stand-in here; the real one is exercised in tests/integration/alerts)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mlops_operator.alerts import server as server_mod
from mlops_operator.alerts.server import PATH, ReceiverConfig, TokenSource, create_app
from mlops_operator.alerts.service import Result, TransientError

TOKEN = "s3cret-token"
BODY = json.dumps({"version": "4", "status": "firing", "alerts": [{
    "status": "firing", "labels": {"alertname": "A", "namespace": "ml"},
    "startsAt": "2026-11-30T05:00:00Z", "fingerprint": "abc"}]}).encode()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Any] = []
        self.fail = fail

    def handle_alert(self, a: Any) -> list[Result]:
        if self.fail:
            raise TransientError("apiserver down")
        self.calls.append(a)
        return [Result(a.name, a.key, a.status, "skipped", "no-deployment")]


@pytest.fixture
async def client_of():  # noqa: ANN201
    clients: list[TestClient] = []

    async def make(recorder: Recorder, **config: Any) -> TestClient:
        cfg = ReceiverConfig(**{"token": TOKEN, "max_body_bytes": 4096, **config})
        client = TestClient(TestServer(create_app(cfg, retrainer=recorder)))  # type: ignore[arg-type]
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def test_a_valid_notification_reaches_the_retrainer(client_of) -> None:  # noqa: ANN001
    rec = Recorder()
    client = await client_of(rec)
    resp = await client.post(PATH, data=BODY, headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body == {"received": 1, "results": [{"alert": "A", "fingerprint": "abc",
                                                "status": "firing", "action": "skipped",
                                                "reason": "no-deployment"}]}
    assert len(rec.calls) == 1


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", f"bearer  {TOKEN[:-1]}"])
async def test_missing_or_wrong_token_is_401_and_nothing_is_handled(client_of, header) -> None:  # noqa: ANN001
    rec = Recorder()
    client = await client_of(rec)
    headers = {"Authorization": header} if header is not None else {}
    resp = await client.post(PATH, data=BODY, headers=headers)
    assert resp.status == 401
    assert "token" in (await resp.json())["error"]
    assert rec.calls == []


async def test_the_scheme_is_case_insensitive(client_of) -> None:  # noqa: ANN001
    client = await client_of(Recorder())
    resp = await client.post(PATH, data=BODY, headers={"Authorization": f"bearer {TOKEN}"})
    assert resp.status == 200


@pytest.mark.parametrize(("body", "status"), [(b"{", 400), (b"[]", 400), (b'{"version":"4"}', 400),
                                              (b"x" * 5000, 413)])
async def test_bad_bodies(client_of, body: bytes, status: int) -> None:  # noqa: ANN001
    rec = Recorder()
    client = await client_of(rec)
    resp = await client.post(PATH, data=body, headers=AUTH)
    assert resp.status == status
    assert (await resp.json())["error"]
    assert rec.calls == []


async def test_oversize_chunked_body_without_length_is_413(client_of) -> None:  # noqa: ANN001
    rec = Recorder()
    client = await client_of(rec)

    async def chunks():  # noqa: ANN202
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post(PATH, data=chunks(), headers=AUTH)
    assert resp.status == 413
    assert rec.calls == []


async def test_transient_api_failure_is_503_so_alertmanager_retries(client_of) -> None:  # noqa: ANN001
    client = await client_of(Recorder(fail=True))
    resp = await client.post(PATH, data=BODY, headers=AUTH)
    assert resp.status == 503
    assert "apiserver down" in (await resp.json())["error"]


async def test_other_paths_and_methods_answer_json(client_of) -> None:  # noqa: ANN001
    client = await client_of(Recorder())
    resp = await client.get(PATH, headers=AUTH)
    assert resp.status == 405 and "error" in await resp.json()
    resp = await client.post("/nope", headers=AUTH)
    assert resp.status == 404 and "error" in await resp.json()
    resp = await client.get("/healthz")
    assert resp.status == 200


async def test_start_is_refused_without_a_token_and_with_port_zero() -> None:
    assert await server_mod.start_receiver(config=ReceiverConfig(port=1234)) is None
    assert await server_mod.start_receiver(config=ReceiverConfig(port=0, token="t")) is None


async def test_start_and_stop_on_a_loopback_port() -> None:
    import httpx

    from mlops_localstack.procs import free_port

    port = free_port()
    handle = await server_mod.start_receiver(
        config=ReceiverConfig(port=port, host="127.0.0.1", token=TOKEN))
    assert handle is not None and handle.url == f"http://127.0.0.1:{port}{PATH}"
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    finally:
        await server_mod.stop_receiver(handle)
    await server_mod.stop_receiver(None)


def test_settings_map_onto_the_receiver_config() -> None:
    class Settings:
        alert_receiver_port = 9000
        alert_receiver_host = "127.0.0.1"
        alert_receiver_token_secret_name = "am-token"
        alert_receiver_token_secret_namespace = "mlops-system"
        alert_receiver_token_secret_key = "bearer"
        namespaces = ["ml-*"]

    cfg = ReceiverConfig.from_settings(Settings())
    assert (cfg.port, cfg.host, cfg.secret_name, cfg.secret_namespace, cfg.secret_key,
            cfg.namespaces, cfg.token) == (9000, "127.0.0.1", "am-token", "mlops-system",
                                           "bearer", ("ml-*",), None)
    assert cfg.authenticated
    from mlops_operator.settings import OperatorSettings

    assert ReceiverConfig.from_settings(OperatorSettings()).port == 8082


def test_the_token_is_read_from_the_secret_and_reread_after_rotation(monkeypatch) -> None:  # noqa: ANN001
    secret = {"data": {"token": base64.b64encode(b"one\n").decode()}}
    reads: list[tuple[str, str]] = []

    def fake_get(api_version: str, kind: str, namespace: str, name: str) -> dict:
        reads.append((namespace, name))
        return secret

    monkeypatch.setattr(server_mod.kube, "get", fake_get)
    clock = [1000.0]
    monkeypatch.setattr(server_mod.time, "monotonic", lambda: clock[0])
    tokens = TokenSource(ReceiverConfig(secret_name="am", secret_namespace="ops"))
    assert tokens.matches("Bearer one")
    assert not tokens.matches("Bearer two")
    assert reads == [("ops", "am")]  # cached, the wrong token within 5 s does not re-read
    secret["data"]["token"] = base64.b64encode(b"two").decode()
    clock[0] += 6
    assert tokens.matches("Bearer two")  # rotated: a wrong token after 5 s re-reads
    assert not tokens.matches("Bearer one")
    assert len(reads) == 2
