"""Helpers of the ModelDeployment serving tests: a registered model, the resource, traffic."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import kube_json

from mlops_localstack.cluster import poll

ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


def register_versions(tracking_uri: str, name: str, kinds: list[str]) -> list[str]:
    """Register one version per entry of ``kinds`` ("good" sklearn, or "bad": raises)."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = mlflow.set_experiment(f"md-{name}")
    X, y = load_iris(return_X_y=True)
    versions = []
    for kind in kinds:
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            if kind == "good":
                info = mlflow.sklearn.log_model(LogisticRegression(max_iter=300).fit(X, y),
                                                name="model", registered_model_name=name)
            else:
                info = mlflow.pyfunc.log_model(name="model", python_model=_Raising(),
                                               registered_model_name=name)
            versions.append(str(info.registered_model_version))
    return versions


class _Raising:  # defined lazily as a PythonModel subclass (mlflow imported on use)
    def __new__(cls) -> Any:
        import mlflow.pyfunc

        class Raising(mlflow.pyfunc.PythonModel):
            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                raise RuntimeError("this candidate is broken")

        return Raising()


@dataclass
class MD(kube_json.Kube):
    """ModelDeployments in the test's namespace, with JSON reads and traffic."""

    operator: Any = None

    def status(self, name: str) -> dict[str, Any]:
        return (self.get("modeldeployment", name) or {}).get("status") or {}

    def condition(self, name: str, ctype: str) -> dict[str, Any]:
        for cond in self.status(name).get("conditions") or []:
            if cond["type"] == ctype:
                return cond
        return {}

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
        def alive() -> str | None:
            return None if self.operator.alive() else "the operator died:\n" + \
                self.operator.logs()[-3000:]

        return poll(what, check, timeout=timeout, interval=0.5, alive=alive)

    def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool],
                    what: str, timeout: float = 180) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            st = self.status(name)
            return st if st and check(st) else None

        return self.wait(f"ModelDeployment {name}: {what}", ok, timeout)

    def router_url(self, name: str) -> str:
        """``http://<router pod IP>:<port>`` of the ModelDeployment's ready router pod."""
        def ready_ip() -> str | None:
            for pod in self.get("pods", selector=f"mlops.dev/deployment={name},"
                                "app.kubernetes.io/component=router"):
                conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
                if conds.get("Ready") == "True" and pod["status"].get("podIP"):
                    return pod["status"]["podIP"]
            return None

        ip = self.wait(f"the router of {name} to be ready", ready_ip)
        return f"http://{ip}:8080"


def send(url: str, model: str, n: int, headers: dict[str, str] | None = None,
         workers: int = 4) -> Counter[str]:
    """POST ``n`` V2 infer requests; count responses by ``model_version`` (or HTTP status)."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def work(k: int) -> None:
        local: Counter[str] = Counter()
        with httpx.Client(timeout=10) as client:
            for _ in range(k):
                r = client.post(f"{url}/v2/models/{model}/infer", json=ROW, headers=headers)
                local[r.json().get("model_version", "?") if r.status_code == 200
                      else f"HTTP {r.status_code}"] += 1
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=work, args=(n // workers + (i < n % workers),))
               for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


@dataclass
class Load:
    """Continuous traffic in the background; every answer counted by version or status."""

    url: str
    model: str
    counts: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        def run() -> None:
            with httpx.Client(timeout=10) as client:
                while not self._stop.is_set():
                    try:
                        r = client.post(f"{self.url}/v2/models/{self.model}/infer", json=ROW)
                        key = (r.json().get("model_version", "?") if r.status_code == 200
                               else f"HTTP {r.status_code}")
                    except httpx.HTTPError as exc:
                        key = type(exc).__name__
                    self.counts[key] += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def failures(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if not k.isdigit()}


def manifest(name: str, model: str, router: str, replicas: int = 1,
             uris: tuple[str, str] | None = None, weights: tuple[int, int] = (70, 30),
             **extra_meta: Any) -> dict[str, Any]:
    a, b = uris or (f"models:/{model}@champion", f"models:/{model}/2")
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, **extra_meta},
        "spec": {"model": model, "traffic": {"router": router},
                 "variants": [{"name": "champion", "modelUri": a, "weight": weights[0],
                               "replicas": replicas},
                              {"name": "challenger", "modelUri": b, "weight": weights[1],
                               "replicas": replicas}]},
    }
