"""A small MLflow client over MLflow's REST API (``/api/2.0/mlflow/...``), on ``httpx``.

The operator needs about twenty ``MlflowClient`` methods; ``import mlflow`` costs ~120 MB of
RSS (pandas, pyarrow, scipy, ...). :class:`MlflowRestClient` has the same method names and
arguments as ``mlflow.tracking.MlflowClient`` for what the operator calls, and returns small
objects with the attributes the operator reads (``run.info.run_id``, ``run.data.metrics``,
``mv.version``/``tags``/``aliases``, ``exp.lifecycle_stage``, ...).

Errors:

* the server answered with an error → :class:`MlflowException`, carrying the server's
  ``error_code`` (``RESOURCE_DOES_NOT_EXIST``, ``RESOURCE_ALREADY_EXISTS``,
  ``INVALID_PARAMETER_VALUE``, ...; derived from the HTTP status when the body is not MLflow's
  JSON) and the HTTP status (:meth:`MlflowException.get_http_status_code`);
* no answer (connection refused, timeout, TLS failure) → ``httpx.TransportError`` as is.

Settings, as MLflow's own client reads them: ``MLFLOW_TRACKING_USERNAME`` +
``MLFLOW_TRACKING_PASSWORD`` (basic auth) or else ``MLFLOW_TRACKING_TOKEN`` (bearer),
``MLFLOW_TRACKING_INSECURE_TLS=true`` (no certificate check), ``MLFLOW_TRACKING_SERVER_CERT_PATH``
(CA bundle), ``MLFLOW_TRACKING_CLIENT_CERT_PATH`` (client certificate).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "/api/2.0/mlflow/"

#: HTTP status → MLflow error code, for error answers whose body is not MLflow's JSON
#: (a proxy's 401/403/502 page, a 404 from a server without the endpoint).
STATUS_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND", 409: "RESOURCE_CONFLICT", 429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL_ERROR", 501: "NOT_IMPLEMENTED", 502: "TEMPORARILY_UNAVAILABLE",
    503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
#: statuses retried (``retries`` times) before giving up
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class MlflowException(Exception):
    """An error answer of the MLflow server: ``error_code`` and the HTTP ``status_code``."""

    def __init__(self, message: str, error_code: str = "INTERNAL_ERROR",
                 status_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.status_code = status_code

    def get_http_status_code(self) -> int:
        return self.status_code

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}"


# -- entities (the attributes the operator reads) -------------------------------------------
def _kv(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in items or ()}


@dataclass(frozen=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True)
class RunTag:
    key: str
    value: str


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    timestamp: int = 0
    step: int = 0


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str
    run_name: str = ""
    artifact_uri: str = ""
    lifecycle_stage: str = "active"
    start_time: int | None = None
    end_time: int | None = None
    user_id: str = ""

    @property
    def run_uuid(self) -> str:
        return self.run_id


@dataclass(frozen=True)
class RunData:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData

    @classmethod
    def from_json(cls, js: Mapping[str, Any]) -> Run:
        i, d = js.get("info", {}), js.get("data", {})
        info = RunInfo(
            run_id=i.get("run_id") or i.get("run_uuid", ""), experiment_id=str(i.get("experiment_id", "")),
            status=i.get("status", ""), run_name=i.get("run_name", ""),
            artifact_uri=i.get("artifact_uri", ""), lifecycle_stage=i.get("lifecycle_stage", "active"),
            start_time=i.get("start_time"), end_time=i.get("end_time"), user_id=i.get("user_id", ""),
        )
        metrics = {m["key"]: float(m.get("value", "nan")) for m in d.get("metrics") or ()}
        return cls(info, RunData(metrics, _kv(d.get("params")), _kv(d.get("tags"))))


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    lifecycle_stage: str = "active"
    artifact_location: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, js: Mapping[str, Any]) -> Experiment:
        return cls(str(js["experiment_id"]), js.get("name", ""), js.get("lifecycle_stage", "active"),
                   js.get("artifact_location", ""), _kv(js.get("tags")))


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    source: str = ""
    run_id: str = ""
    status: str = ""
    current_stage: str = "None"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    model_id: str | None = None
    run_link: str = ""
    creation_timestamp: int | None = None
    last_updated_timestamp: int | None = None

    @classmethod
    def from_json(cls, js: Mapping[str, Any]) -> ModelVersion:
        return cls(
            name=js.get("name", ""), version=str(js.get("version", "")), source=js.get("source", ""),
            run_id=js.get("run_id", ""), status=js.get("status", ""),
            current_stage=js.get("current_stage", "None"), description=js.get("description", ""),
            tags=_kv(js.get("tags")), aliases=list(js.get("aliases") or ()),
            model_id=js.get("model_id") or None, run_link=js.get("run_link", ""),
            creation_timestamp=js.get("creation_timestamp"),
            last_updated_timestamp=js.get("last_updated_timestamp"),
        )


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias → version, as MLflow's
    latest_versions: list[ModelVersion] = field(default_factory=list)

    @classmethod
    def from_json(cls, js: Mapping[str, Any]) -> RegisteredModel:
        return cls(
            name=js.get("name", ""), description=js.get("description", ""), tags=_kv(js.get("tags")),
            aliases={a["alias"]: str(a["version"]) for a in js.get("aliases") or ()},
            latest_versions=[ModelVersion.from_json(v) for v in js.get("latest_versions") or ()],
        )


@dataclass(frozen=True)
class FileInfo:
    path: str
    is_dir: bool = False
    file_size: int | None = None


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    name: str
    experiment_id: str
    source_run_id: str | None = None
    artifact_location: str = ""
    status: str = ""
    creation_timestamp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, js: Mapping[str, Any]) -> LoggedModel:
        i = js.get("info", js)
        return cls(
            model_id=i["model_id"], name=i.get("name", ""), experiment_id=str(i.get("experiment_id", "")),
            source_run_id=i.get("source_run_id") or None, artifact_location=i.get("artifact_uri", ""),
            status=i.get("status", ""), creation_timestamp=i.get("creation_timestamp_ms"),
            tags=_kv(i.get("tags")),
        )


def _items(items: Iterable[Any] | Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``[{"key", "value"}]`` from a mapping or from objects with ``key``/``value``."""
    if items is None:
        return []
    if isinstance(items, Mapping):
        return [{"key": str(k), "value": str(v)} for k, v in items.items()]
    return [{"key": i.key, "value": str(i.value)} for i in items]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _now_ms() -> int:
    return int(time.time() * 1000)


class MlflowRestClient:
    """MLflow tracking + registry over REST: one pooled ``httpx.Client`` (thread-safe).

    ``experiment_ids`` caches experiment name → id for :func:`mlops_operator.tracking.
    ensure_experiment` (one lookup per experiment, not per TrainingRun).
    """

    def __init__(self, tracking_uri: str, timeout: float = 10.0, retries: int = 0) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.retries = max(0, int(retries))
        self.backoff = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1") or 1)
        self.experiment_ids: dict[str, str] = {}
        self.experiment_lock = threading.Lock()
        auth: httpx.Auth | None = None
        headers = {"User-Agent": "mlops-operator"}
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get(
            "MLFLOW_TRACKING_PASSWORD")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if user and password:
            auth = httpx.BasicAuth(user, password)
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        verify: bool | str = True
        if _env_flag("MLFLOW_TRACKING_INSECURE_TLS"):
            verify = False
        elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None
        self._http = httpx.Client(
            base_url=self.tracking_uri + API, timeout=httpx.Timeout(timeout), auth=auth,
            headers=headers, verify=verify, cert=cert, trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    # -- transport --------------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One call; GET sends ``body`` as query parameters, other methods as JSON."""
        params = {k: v for k, v in (body or {}).items() if v is not None} if method == "GET" else None
        attempt = 0
        while True:
            try:
                resp = self._http.request(method, endpoint, params=params,
                                          json=None if method == "GET" else dict(body or {}))
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if resp.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return self._answer(resp, endpoint)
            time.sleep(self.backoff * 2**attempt)
            attempt += 1

    @staticmethod
    def _answer(resp: httpx.Response, endpoint: str) -> dict[str, Any]:
        try:
            js = resp.json() if resp.content else {}
        except ValueError:
            js = None
        if resp.is_success:
            if not isinstance(js, dict):
                # e.g. a login page of a proxy in front of MLflow: an answer, not an outage
                raise MlflowException(
                    f"MLflow {endpoint} answered {resp.status_code} with a body that is not JSON: "
                    f"{resp.text[:200]!r}", "INTERNAL_ERROR", resp.status_code)
            return js
        if isinstance(js, dict) and "error_code" in js:
            raise MlflowException(str(js.get("message", "")), str(js["error_code"]), resp.status_code)
        raise MlflowException(
            f"MLflow {endpoint} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
            STATUS_CODES.get(resp.status_code, "INTERNAL_ERROR"), resp.status_code)

    def _pages(self, method: str, endpoint: str, body: dict[str, Any], key: str,
               limit: int | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            js = self._call(method, endpoint, body)
            out.extend(js.get(key) or ())
            token = js.get("next_page_token")
            if not token or (limit is not None and len(out) >= limit):
                return out if limit is None else out[:limit]
            body = {**body, "page_token": token}

    # -- experiments ------------------------------------------------------------------------
    def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            js = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return Experiment.from_json(js["experiment"])

    def get_experiment(self, experiment_id: str) -> Experiment:
        js = self._call("GET", "experiments/get", {"experiment_id": str(experiment_id)})
        return Experiment.from_json(js["experiment"])

    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: Mapping[str, Any] | None = None) -> str:
        js = self._call("POST", "experiments/create", {
            "name": name, **({"artifact_location": artifact_location} if artifact_location else {}),
            **({"tags": _items(tags)} if tags else {}),
        })
        return str(js["experiment_id"])

    def restore_experiment(self, experiment_id: str) -> None:
        self._call("POST", "experiments/restore", {"experiment_id": str(experiment_id)})

    # -- runs -------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run:
        return Run.from_json(self._call("GET", "runs/get", {"run_id": run_id})["run"])

    def create_run(self, experiment_id: str, start_time: int | None = None,
                   tags: Mapping[str, Any] | None = None, run_name: str | None = None) -> Run:
        tags = dict(tags or {})
        if run_name:
            tags.setdefault("mlflow.runName", run_name)
        js = self._call("POST", "runs/create", {
            "experiment_id": str(experiment_id), "start_time": start_time or _now_ms(),
            "tags": _items(tags), **({"run_name": run_name} if run_name else {}),
        })
        return Run.from_json(js["run"])

    def set_terminated(self, run_id: str, status: str | None = None,
                       end_time: int | None = None) -> None:
        self._call("POST", "runs/update", {
            "run_id": run_id, "status": status or "FINISHED", "end_time": end_time or _now_ms()})

    def log_batch(self, run_id: str, metrics: Iterable[Any] = (), params: Iterable[Any] = (),
                  tags: Iterable[Any] = ()) -> None:
        self._call("POST", "runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
                        for m in metrics],
            "params": _items(params), "tags": _items(tags),
        })

    def search_runs(self, experiment_ids: list[str], filter_string: str = "",
                    run_view_type: int | str = "ACTIVE_ONLY", max_results: int = 1000,
                    order_by: list[str] | None = None, page_token: str | None = None) -> list[Run]:
        """One page of at most ``max_results`` runs, as MLflow's client returns."""
        js = self._call("POST", "runs/search", {
            "experiment_ids": [str(e) for e in experiment_ids], "filter": filter_string,
            "run_view_type": _view_type(run_view_type), "max_results": max_results,
            "order_by": list(order_by or ()), **({"page_token": page_token} if page_token else {}),
        })
        return [Run.from_json(r) for r in js.get("runs") or ()]

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """The run's artifacts under ``path``, listed by the server (proxied or not)."""
        js = self._call("GET", "artifacts/list", {"run_id": run_id, "path": path or None})
        return [FileInfo(f["path"], bool(f.get("is_dir", False)),
                         int(f["file_size"]) if "file_size" in f else None)
                for f in js.get("files") or ()]

    def search_logged_models(self, experiment_ids: list[str], filter_string: str | None = None,
                             max_results: int | None = None,
                             order_by: list[dict[str, Any]] | None = None) -> list[LoggedModel]:
        body: dict[str, Any] = {"experiment_ids": [str(e) for e in experiment_ids]}
        if filter_string:
            body["filter"] = filter_string
        if order_by:
            body["order_by"] = order_by
        rows = self._pages("POST", "logged-models/search", body, "models", max_results)
        return [LoggedModel.from_json(m) for m in rows]

    # -- registry ---------------------------------------------------------------------------
    def get_registered_model(self, name: str) -> RegisteredModel:
        js = self._call("GET", "registered-models/get", {"name": name})
        return RegisteredModel.from_json(js["registered_model"])

    def create_registered_model(self, name: str, tags: Mapping[str, Any] | None = None,
                                description: str | None = None) -> RegisteredModel:
        js = self._call("POST", "registered-models/create", {
            "name": name, "tags": _items(tags), **({"description": description} if description else {})})
        return RegisteredModel.from_json(js["registered_model"])

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        self._call("POST", "registered-models/set-tag", {"name": name, "key": key, "value": str(value)})

    def set_registered_model_alias(self, name: str, alias: str, version: str | int) -> None:
        self._call("POST", "registered-models/alias",
                   {"name": name, "alias": alias, "version": str(version)})

    def get_model_version(self, name: str, version: str | int) -> ModelVersion:
        js = self._call("GET", "model-versions/get", {"name": name, "version": str(version)})
        return ModelVersion.from_json(js["model_version"])

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        js = self._call("GET", "registered-models/alias", {"name": name, "alias": alias})
        return ModelVersion.from_json(js["model_version"])

    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             tags: Mapping[str, Any] | None = None, run_link: str | None = None,
                             description: str | None = None,
                             model_id: str | None = None) -> ModelVersion:
        body: dict[str, Any] = {"name": name, "source": source, "tags": _items(tags)}
        for key, value in (("run_id", run_id), ("run_link", run_link),
                           ("description", description), ("model_id", model_id)):
            if value:
                body[key] = value
        return ModelVersion.from_json(self._call("POST", "model-versions/create", body)["model_version"])

    def set_model_version_tag(self, name: str, version: str | int, key: str, value: Any) -> None:
        self._call("POST", "model-versions/set-tag",
                   {"name": name, "version": str(version), "key": key, "value": str(value)})

    def delete_model_version_tag(self, name: str, version: str | int, key: str) -> None:
        self._call("DELETE", "model-versions/delete-tag",
                   {"name": name, "version": str(version), "key": key})

    def search_model_versions(self, filter_string: str | None = None,
                              max_results: int | None = None,
                              order_by: list[str] | None = None) -> list[ModelVersion]:
        """Every matching version (all pages), or at most ``max_results``."""
        body: dict[str, Any] = {"filter": filter_string or None,
                                "order_by": list(order_by) if order_by else None}
        rows = self._pages("GET", "model-versions/search", body, "model_versions", max_results)
        return [ModelVersion.from_json(v) for v in rows]


def _view_type(view: int | str) -> str:
    """MLflow's ``ViewType`` (1 active, 2 deleted, 3 all) or its name."""
    if isinstance(view, str):
        return view
    return {1: "ACTIVE_ONLY", 2: "DELETED_ONLY", 3: "ALL"}.get(int(view), "ACTIVE_ONLY")


class ViewType:
    """The run view types of ``search_runs`` (MLflow's ``ViewType`` values)."""

    ACTIVE_ONLY = 1
    DELETED_ONLY = 2
    ALL = 3
