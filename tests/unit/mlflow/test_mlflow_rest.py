"""The operator's MLflow REST client (``mlops_operator.mlflow_rest``) against a real MLflow
server, and its error classification against real loopback HTTP(S) servers.

Data is set up with MLflow's own client (what users and the trainer use); what the operator
reads back goes through its own client.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from mlops_operator import registry, tracking
from mlops_operator.mlflow_rest import MlflowException, MlflowRestClient
from mlops_operator.mlflow_utils import (
    is_not_found,
    is_unreachable,
    make_client,
    mlflow_errors,
    register_version,
)


@pytest.fixture(scope="module")
def uri(mlflow_server: Any) -> str:
    return mlflow_server.tracking_uri


@pytest.fixture(scope="module")
def client(uri: str) -> MlflowRestClient:
    return MlflowRestClient(uri, timeout=30.0)


@pytest.fixture(scope="module")
def setup(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_operator_modules_never_import_mlflow(uri: str) -> None:
    """The operator's modules, a client and a TrainingRun's MLflow work, in a fresh process:
    ``mlflow`` (and pandas/pyarrow/scipy behind it) is never imported."""
    code = textwrap.dedent(f"""
        import sys
        import mlops_operator.cli, mlops_operator.runner, mlops_operator.handlers  # noqa
        from mlops_operator import registry, tracking
        from mlops_operator.aliases import WATCH
        from mlops_operator.mlflow_utils import make_client, register_version
        c = make_client({uri!r}, 30.0)
        exp = tracking.ensure_experiment(c, "no-import")
        run, _ = tracking.ensure_run(c, exp, "uid-ni", "ni", {{"mlops.dev/uid": "uid-ni"}}, {{"C": "1"}})
        tracking.end_run(c, run.info.run_id, "FINISHED")
        mv = register_version(c, "no-import-model", f"runs:/{{run.info.run_id}}/model", run.info.run_id, "key-ni")
        registry.move_alias(c, "no-import-model", "champion", mv.version, {{"t": "1"}})
        assert WATCH.read(c, "no-import-model") == {{"champion": mv.version}}
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("mlflow", "pandas", "pyarrow", "scipy", "sklearn"))
        print(",".join(heavy) or "none")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


def test_runs_params_metrics_and_artifacts_read_back(client: MlflowRestClient, setup: Any,
                                                      tmp_path: Path) -> None:
    exp = tracking.ensure_experiment(client, "rest-runs")
    run, created = tracking.ensure_run(client, exp, "uid-r1", "r1",
                                       {"mlops.dev/uid": "uid-r1", "k": "v"},
                                       {f"p{i:03d}": str(i) for i in range(150)})
    assert created and run.info.status == "RUNNING" and run.info.experiment_id == exp
    run_id = run.info.run_id
    setup.log_metric(run_id, "accuracy", 0.5, step=0)
    setup.log_metric(run_id, "accuracy", 0.75, step=1)
    setup.log_metric(run_id, "loss", float("nan"))
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    setup.log_artifact(run_id, str(tmp_path / "MLmodel"), "model")

    again, created_again = tracking.ensure_run(client, exp, "uid-r1", "r1", {"mlops.dev/uid": "uid-r1"})
    assert not created_again and again.info.run_id == run_id
    got = client.get_run(run_id)
    assert len(got.data.params) == 150 and got.data.params["p149"] == "149"  # two log_batch calls
    assert got.data.tags["k"] == "v" and got.data.tags["mlflow.runName"] == "r1"
    assert got.data.metrics["accuracy"] == 0.75
    assert tracking.run_metrics(got) == {"accuracy": 0.75}
    assert [f.path for f in client.list_artifacts(run_id, "model")] == ["model/MLmodel"]
    assert client.list_artifacts(run_id, "nothing-here") == []
    assert tracking.end_run(client, run_id, "FAILED")
    assert not tracking.end_run(client, run_id, "KILLED")
    assert setup.get_run(run_id).info.status == "FAILED"


def test_registry_versions_tags_aliases(client: MlflowRestClient, setup: Any) -> None:
    exp = tracking.ensure_experiment(client, "rest-registry")
    run, _ = tracking.ensure_run(client, exp, "uid-g1", "g1", {"mlops.dev/uid": "uid-g1"})
    run_id = run.info.run_id
    first = register_version(client, "rest-model", f"runs:/{run_id}/model", run_id, "key-1",
                             {"a": "1"}, description="first")
    assert register_version(client, "rest-model", "ignored", run_id, "key-1").version == first.version
    second = register_version(client, "rest-model", f"runs:/{run_id}/model", run_id, "key-2")
    assert int(second.version) == int(first.version) + 1
    mv = client.get_model_version("rest-model", first.version)
    assert (mv.run_id, mv.source, mv.description) == (run_id, f"runs:/{run_id}/model", "first")
    assert mv.tags == {"mlops.dev/registration-key": "key-1", "a": "1"}
    assert mv.current_stage == "None"

    registry.move_alias(client, "rest-model", "champion", second.version, {"promoted": "yes"})
    holder = registry.alias_holder(client, "rest-model", "champion")
    assert holder is not None and holder.version == second.version
    assert holder.aliases == ["champion"] and holder.tags["promoted"] == "yes"
    assert registry.ledger(client, "rest-model", "champion") == second.version
    assert setup.get_registered_model("rest-model").aliases == {"champion": second.version}
    assert client.get_model_version_by_alias("rest-model", "champion").version == second.version
    client.delete_model_version_tag("rest-model", second.version, "promoted")
    assert "promoted" not in setup.get_model_version("rest-model", second.version).tags
    assert registry.alias_holder(client, "rest-model", "nobody") is None
    assert registry.alias_holder(client, "no-such-model", "champion") is None
    assert registry.ledger(client, "no-such-model", "champion") is None
    assert registry.run_metrics(client, "0" * 32) == {}
    with pytest.raises(registry.SourceNotFound):
        registry.get_version(client, "rest-model", "999")
    with pytest.raises(registry.SourceNotFound):
        registry.resolve_source(client, "runs:/no-such-run/model")
    found = sorted(int(v.version) for v in client.search_model_versions("name = 'rest-model'"))
    assert found == [int(first.version), int(second.version)]
    assert client.search_model_versions("name = 'rest-model'", max_results=1)[0].name == "rest-model"


def test_logged_model_source_resolves_to_models_uri(client: MlflowRestClient, setup: Any) -> None:
    exp = tracking.ensure_experiment(client, "rest-logged")
    run, _ = tracking.ensure_run(client, exp, "uid-l1", "l1", {"mlops.dev/uid": "uid-l1"})
    logged = setup.create_logged_model(experiment_id=exp, name="model", source_run_id=run.info.run_id)
    resolved = registry.resolve_source(client, f"runs:/{run.info.run_id}/model")
    assert resolved.source == f"models:/{logged.model_id}"
    assert resolved.model_id == logged.model_id and resolved.run_id == run.info.run_id
    mv = registry.register(client, "rest-logged-model", f"runs:/{run.info.run_id}/model", "key-l")
    got = setup.get_model_version("rest-logged-model", mv.version)
    assert (got.source, got.run_id) == (f"models:/{logged.model_id}", run.info.run_id)


def test_experiment_is_looked_up_once_then_restored_when_deleted(
        client: MlflowRestClient, setup: Any) -> None:
    """Cached per client: after a delete the cached id is still answered (no lookup); the next
    run's creation finds the experiment deleted, restores it and creates the run there."""
    c = MlflowRestClient(client.tracking_uri, timeout=30.0)
    exp = tracking.ensure_experiment(c, "rest-cache")
    assert c.experiment_ids == {"rest-cache": exp}
    setup.delete_experiment(exp)
    assert tracking.ensure_experiment(c, "rest-cache") == exp  # cached: no call
    assert setup.get_experiment(exp).lifecycle_stage == "deleted"
    run, created = tracking.ensure_run(c, exp, "uid-c1", "c1", {"mlops.dev/uid": "uid-c1"})
    assert created and run.info.experiment_id == exp
    assert setup.get_experiment(exp).lifecycle_stage == "active"
    assert c.experiment_ids == {"rest-cache": exp}


def test_server_errors_keep_code_and_status(client: MlflowRestClient) -> None:
    with pytest.raises(MlflowException) as err:
        client.get_run("0" * 32)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert err.value.get_http_status_code() == 404
    assert is_not_found(err.value) and not is_unreachable(err.value)
    client.create_registered_model("rest-dup")
    with pytest.raises(MlflowException) as dup:
        client.create_registered_model("rest-dup")
    assert (dup.value.error_code, dup.value.get_http_status_code()) == ("RESOURCE_ALREADY_EXISTS", 400)
    with pytest.raises(MlflowException) as bad:
        client.search_runs(["0"], filter_string="this is not a filter")
    assert bad.value.error_code == "INVALID_PARAMETER_VALUE" and not is_unreachable(bad.value)
    assert client.get_experiment_by_name("rest-no-such-experiment") is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_client_and_one_experiment_lookup_under_concurrent_first_passes(uri: str) -> None:
    """8 worker threads' first passes at once share one client (one experiment cache)."""
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(8)

    def first_pass(_: int) -> tuple[int, str]:
        start.wait()
        c = make_client(uri, 7.0)
        return id(c), tracking.ensure_experiment(c, "rest-concurrent")

    with ThreadPoolExecutor(8) as pool:
        got = set(pool.map(first_pass, range(8)))
    assert len(got) == 1
    assert make_client(uri, 7.0).experiment_ids == {"rest-concurrent": next(iter(got))[1]}


def test_no_server_is_unreachable_and_temporary() -> None:
    c = make_client(f"http://127.0.0.1:{_free_port()}", 2.0)
    with pytest.raises(httpx.ConnectError) as err:
        c.get_run("x")
    assert is_unreachable(err.value)
    with pytest.raises(kopf.TemporaryError) as temp, mlflow_errors("reading a run"):
        c.get_run("x")
    assert "MLflow unreachable while reading a run" in str(temp.value)


class _Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, content type, body) of ``server.script``
    and records the request's Authorization header."""

    def _answer(self) -> None:
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        status, ctype, body = self.server.script.pop(0)  # type: ignore[attr-defined]
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.script, server.seen = [], []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(("status", "code"), [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"),
                                              (404, "ENDPOINT_NOT_FOUND")])
def test_non_json_4xx_is_permanent_with_the_servers_words(
        scripted: ThreadingHTTPServer, status: int, code: str) -> None:
    """A proxy's 4xx page (no MLflow JSON) is an answer: permanent, never "unreachable" — even
    when the body or an id contains "503"."""
    scripted.script.append((status, "text/html", "<h1>denied by the proxy (ref 503)</h1>"))  # type: ignore[attr-defined]
    c = MlflowRestClient(_url(scripted), timeout=5.0, retries=3)
    with pytest.raises(MlflowException) as err, mlflow_errors("reading run 503"):
        c.get_run("503")
    assert (err.value.error_code, err.value.get_http_status_code()) == (code, status)
    assert "denied by the proxy" in str(err.value) and not is_unreachable(err.value)
    assert len(scripted.seen) == 1  # type: ignore[attr-defined]  # a 4xx is not retried


def test_a_200_that_is_not_json_is_permanent(scripted: ThreadingHTTPServer) -> None:
    """A proxy's login page answered with 200: not MLflow, and not an outage either."""
    scripted.script.append((200, "text/html", "<form>sign in</form>"))  # type: ignore[attr-defined]
    with pytest.raises(MlflowException) as err, mlflow_errors("reading a run"):
        MlflowRestClient(_url(scripted), timeout=5.0).get_run("r")
    assert "not JSON" in str(err.value) and "sign in" in str(err.value)
    assert not is_unreachable(err.value)


@pytest.mark.parametrize("status", [429, 502, 503, 504, 500])
def test_5xx_and_429_are_temporary(scripted: ThreadingHTTPServer, status: int) -> None:
    scripted.script.append((status, "text/plain", "busy"))  # type: ignore[attr-defined]
    c = MlflowRestClient(_url(scripted), timeout=5.0)
    with pytest.raises(kopf.TemporaryError) as err, mlflow_errors("reading a run"):
        c.get_run("r")
    assert isinstance(err.value.__cause__, MlflowException)
    assert err.value.__cause__.get_http_status_code() == status


def test_retries_then_answers(scripted: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.01")
    ok = {"experiment": {"experiment_id": "7", "name": "e", "lifecycle_stage": "active"}}
    scripted.script.extend([(503, "text/plain", "busy"), (200, "application/json", json.dumps(ok))])  # type: ignore[attr-defined]
    c = MlflowRestClient(_url(scripted), timeout=5.0, retries=1)
    assert c.get_experiment_by_name("e").experiment_id == "7"  # type: ignore[union-attr]
    assert len(scripted.seen) == 2  # type: ignore[attr-defined]


def test_auth_from_mlflows_environment(scripted: ThreadingHTTPServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ok = (200, "application/json", json.dumps({"registered_model": {"name": "m"}}))
    scripted.script.extend([ok, ok])  # type: ignore[attr-defined]
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-1")
    MlflowRestClient(_url(scripted)).get_registered_model("m")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    MlflowRestClient(_url(scripted)).get_registered_model("m")  # basic auth wins, as in MLflow
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert scripted.seen == ["Bearer tok-1", basic]  # type: ignore[attr-defined]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_settings_from_mlflows_environment(scripted: ThreadingHTTPServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    scripted.socket = ctx.wrap_socket(scripted.socket, server_side=True)
    ok = (200, "application/json", json.dumps({"registered_model": {"name": "m"}}))
    scripted.script.extend([ok, ok])  # type: ignore[attr-defined]
    url = f"https://127.0.0.1:{scripted.server_address[1]}"
    with pytest.raises(httpx.ConnectError):  # an unknown CA: refused
        MlflowRestClient(url, timeout=5.0).get_registered_model("m")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert))
    assert MlflowRestClient(url, timeout=5.0).get_registered_model("m").name == "m"
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    assert MlflowRestClient(url, timeout=5.0).get_registered_model("m").name == "m"
