"""How long from a promotion to 100 % of traffic on the new version, and how many requests fail.

On a local stack of its own (real apiserver and controller manager, node stand-in, MLflow,
Prometheus, the operator as a process): a ModelDeployment of one variant (2 replicas, the
builtin router, rollout Immediate) serves ``models:/<m>@champion``; continuous traffic runs
through the router while a ModelVersion promotes the next version. Per round it prints the time
from the promotion (ModelVersion applied) to the alias move, to the first answer of the new
version, and to the point after which every answer comes from the new version, plus the
requests that failed. Target: 0 failed. Run: ``.venv/bin/python bench/operator/rollout.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


def register(uri: str, model: str, n: int) -> list[str]:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(f"bench-{model}")
    X, y = load_iris(return_X_y=True)
    out = []
    for _ in range(n):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(LogisticRegression(max_iter=300).fit(X, y),
                                            name="model", registered_model_name=model)
            out.append(str(info.registered_model_version))
    return out


class Load(threading.Thread):
    """Requests back to back; (monotonic time, answer) for each."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.log: list[tuple[float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"{self.url}/v2/models/{self.model}/infer", json=ROW)
                    answer = r.json().get("model_version", "?") if r.status_code == 200 \
                        else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                self.log.append((time.monotonic(), answer))


def wait(what: str, check: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := check():
            return out
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from mlflow import MlflowClient

    from mlops_localstack.cluster import Cluster
    from mlops_localstack.stack import LocalStack

    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp)).start()
        try:
            cluster = Cluster(Path(stack.state["kubeconfig"]), kubectl_path=stack.state["kubectl"])
            uri = stack.state["mlflowTrackingUri"]
            model = "bench"
            versions = register(uri, model, args.rounds + 1)
            client = MlflowClient(uri)
            client.set_registered_model_alias(model, "champion", versions[0])
            cluster.kubectl("create", "namespace", "bench")

            def kubectl_json(*a: str) -> Any:
                out = cluster.kubectl(*a, "-n", "bench", "-o", "json", check=False)
                return json.loads(out.stdout) if out.returncode == 0 else None

            def apply(doc: dict[str, Any]) -> None:
                cluster.kubectl("apply", "-n", "bench", "-f", "-", input=yaml.safe_dump(doc))

            apply({"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
                   "metadata": {"name": "b"},
                   "spec": {"model": model, "variants": [{"name": "champion",
                            "modelUri": f"models:/{model}@champion", "weight": 100,
                                                          "replicas": 2}],
                            "rollout": {"strategy": "Immediate"}}})
            wait("Ready", lambda: ((kubectl_json("get", "md", "b") or {}).get("status") or {})
                 .get("phase") == "Ready", 600)

            def router_ip() -> str | None:
                pods = (kubectl_json("get", "pods", "-l", "app.kubernetes.io/component=router")
                        or {}).get("items", [])
                return next((p["status"].get("podIP") for p in pods
                             if p["status"].get("podIP")), None)

            load = Load(f"http://{wait('the router', router_ip)}:8080", model)
            load.start()
            rows = []
            for i, version in enumerate(versions[1:], start=1):
                time.sleep(2)  # steady traffic on the old version first
                t0 = time.monotonic()
                start_index = len(load.log)
                apply({"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelVersion",
                       "metadata": {"name": f"{model}-v{version}"},
                       "spec": {"model": model, "version": version,
                                "promote": {"alias": "champion"}}})
                wait("the alias", lambda v=version: client.get_registered_model(model)
                     .aliases.get("champion") == v)
                t_alias = time.monotonic()
                wait("the roll", lambda v=version: ((kubectl_json("get", "md", "b") or {})
                     .get("status") or {}).get("champion") == v
                     and kubectl_json("get", "md", "b")["status"]["phase"] == "Ready", 600)
                time.sleep(3)  # then every answer must be the new version
                window = load.log[start_index:]
                first_new = next(t for t, a in window if a == version)
                last_old = max((t for t, a in window if a != version), default=t0)
                failed = sum(1 for _, a in window if not a.isdigit())
                rows.append({"round": i, "alias_s": t_alias - t0, "first_new_s": first_new - t0,
                             "all_new_s": last_old - t0, "requests": len(window),
                             "failed": failed})
            load.stop.set()
            load.join(timeout=15)
        finally:
            stack.stop()
    print("Immediate rollout, promotion (ModelVersion applied) -> traffic on the new version, "
          "one variant x 2 replicas, builtin router, continuous traffic (1 client)")
    print("| round | alias moved | first answer from new | 100 % new after | requests | failed |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['round']} | {r['alias_s']:.2f} s | {r['first_new_s']:.2f} s | "
              f"{r['all_new_s']:.2f} s | {r['requests']} | {r['failed']} |")
    print(f"median time to 100 % new: {statistics.median(r['all_new_s'] for r in rows):.2f} s; "
          f"failed requests in all: {sum(r['failed'] for r in rows)} (target 0)")
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
