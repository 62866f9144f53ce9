"""The closed loop on a running local stack — what `make demo` shows and the e2e test counts.

train (examples/iris/trainingrun.yaml) → promote (its ModelVersion) → deploy 90/10
(examples/iris/modeldeployment-loop.yaml) → normal traffic → drifted traffic → the drift alert
fires in Prometheus → Alertmanager → the operator's webhook → one retraining TrainingRun →
validated → promoted → the deployment rolls the champion to the new version (a canary gated by
Prometheus, then its stable pods). Each step is printed on a timeline as it happens; a step
that stalls says which one.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "iris"


def iris_rows() -> list[list[float]]:
    """The iris table (examples/iris/data/iris.csv): normal traffic looks like the training
    data, so the drift score stays low until the inputs really change."""
    lines = (EXAMPLES / "data" / "iris.csv").read_text().splitlines()[1:]
    return [[float(x) for x in line.split(",")[:4]] for line in lines if line.strip()]


@dataclass
class Timeline:
    """What happened, when (seconds since the loop started), to which object."""

    say: Callable[[str], None] = print
    start: float = field(default_factory=time.monotonic)
    rows: list[tuple[float, str, str]] = field(default_factory=list)

    def mark(self, what: str, obj: str = "") -> None:
        t = time.monotonic() - self.start
        self.rows.append((t, what, obj))
        self.say(f"[{t:6.1f}s] {what}{'  ' + obj if obj else ''}")

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` until truthy; show progress every 15 s; fail naming the slow step."""
        began = time.monotonic()
        shown = began
        while True:
            out = check()
            if out:
                return out
            now = time.monotonic()
            if now - began > timeout:
                raise TimeoutError(f"stalled at: {what} (waited {timeout:.0f}s)")
            if now - shown >= 15:
                self.say(f"         … still waiting for {what} ({now - began:.0f}s)")
                shown = now
            time.sleep(0.5)


class Traffic(threading.Thread):
    """V2 infer requests in the background through the router: normal rows, or drifted rows."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.drift = threading.Event()
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()

    def run(self) -> None:
        rng = random.Random(7)
        rows = iris_rows()
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                row = list(rng.choice(rows))
                if self.drift.is_set():  # inputs the model never saw: every feature shifted
                    row = [x * 1.6 + 3.0 for x in row]
                body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                    "data": row}]}
                try:
                    r = client.post(f"{self.url}/v2/models/{self.model}/infer", json=body)
                    key = r.json().get("model_version", "?") if r.status_code == 200 \
                        else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                self.answers[key] += 1
                time.sleep(0.005)

    def failed(self) -> int:
        return sum(n for k, n in self.answers.items() if not k.isdigit())


@dataclass
class LoopResult:
    timeline: Timeline
    first_version: str
    new_version: str
    retrains: list[dict[str, Any]]
    answers: Counter[str]
    failed_requests: int


def run_loop(state: dict[str, Any], namespace: str = "demo",
             say: Callable[[str], None] = print) -> LoopResult:
    """Run the whole loop on the stack described by ``state`` (its state.json)."""
    cluster = Cluster(Path(state["kubeconfig"]), kubectl_path=state["kubectl"], kind="local")
    tl = Timeline(say)
    prom = state["prometheusUrl"]

    def get(kind: str, name: str | None = None, selector: str | None = None) -> Any:
        args = ["get", kind, *([name] if name else []), "-n", namespace, "-o", "json"]
        out = cluster.kubectl(*args, *(["-l", selector] if selector else []), check=False)
        if out.returncode != 0:
            return None
        data = json.loads(out.stdout)
        return data if name else data["items"]

    def status(kind: str, name: str) -> dict[str, Any]:
        return (get(kind, name) or {}).get("status") or {}

    if cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "trainingrun.yaml"))
    tl.mark("applied TrainingRun", f"{namespace}/iris-train-1")
    tr = tl.wait("the first training", lambda: status("tr", "iris-train-1").get("phase")
                 in ("Succeeded", "Failed") and status("tr", "iris-train-1"), 600)
    if tr["phase"] != "Succeeded":
        raise RuntimeError(f"the first training failed: {tr.get('message')}")
    mv = tr["modelVersion"]["name"]
    tl.mark(f"trained: accuracy {tr['metrics'].get('accuracy', 0):.3f}", f"run {tr['mlflowRunId']}")
    mvs = tl.wait("the first promotion", lambda: status("mv", mv).get("phase") in (
        "Promoted", "Rejected", "Failed", "Validated") and status("mv", mv), 300)
    first = str(mvs["version"])
    tl.mark(f"ModelVersion {mvs['phase']}: iris v{first} is {mvs.get('alias')}", f"mv/{mv}")

    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "modeldeployment-loop.yaml"))
    tl.mark("applied ModelDeployment (champion 90 / control 10)", "md/iris")
    tl.wait("the deployment to be Ready", lambda: status("md", "iris").get("phase") == "Ready",
            300)
    md = status("md", "iris")
    tl.mark(f"serving {md['traffic']}, ready {md['ready']}", md.get("url", ""))

    def router_ip() -> str | None:
        for pod in get("pods", selector="mlops.dev/deployment=iris,"
                       "app.kubernetes.io/component=router") or []:
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            if ready.get("Ready") == "True" and pod["status"].get("podIP"):
                return str(pod["status"]["podIP"])
        return None

    traffic = Traffic(f"http://{tl.wait('the router', router_ip, 120)}:8080", "iris")
    traffic.start()
    try:
        tl.wait("drift scores of both variants (100 rows each)",
                lambda: len(drift_scores(prom, namespace)) == 2, 240)
        if alerts_now(prom, namespace):
            raise RuntimeError("the drift alert was pending during normal traffic")
        scores = drift_scores(prom, namespace)
        tl.mark("normal traffic, no drift alert: max PSI " + " ".join(
            f"{v}={x:.2f}" for v, x in sorted(scores.items())), dict_text(traffic.answers))
        traffic.drift.set()
        tl.mark("drifted traffic: every feature shifted")

        alerts = tl.wait("the drift alert to fire",
                         lambda: alerts_now(prom, namespace, "firing"), 240)
        tl.mark("alert ModelFeatureDrift firing", f"variant {alerts[0]['metric'].get('variant')}")
        retrains = tl.wait("the retraining TrainingRun", lambda: get(
            "tr", selector="mlops.dev/deployment=iris"), 120)
        name = retrains[0]["metadata"]["name"]
        tl.mark("Alertmanager → webhook → TrainingRun created", f"tr/{name}")
        traffic.drift.clear()
        tr2 = tl.wait("the retraining", lambda: status("tr", name).get("phase") in (
            "Succeeded", "Failed") and status("tr", name), 600)
        if tr2["phase"] != "Succeeded":
            raise RuntimeError(f"the retraining failed: {tr2.get('message')}")
        new = str(tr2["modelVersion"]["version"])
        tl.mark(f"retrained: iris v{new}", f"run {tr2['mlflowRunId']}")
        mv2 = tr2["modelVersion"]["name"]
        st = tl.wait("the new version's promotion", lambda: status("mv", mv2).get("phase") in (
            "Promoted", "Rejected", "Failed", "Validated") and status("mv", mv2), 300)
        tl.mark(f"ModelVersion {st['phase']}: v{new} is {st.get('alias')}", f"mv/{mv2}")
        tl.wait("the canary of the new champion", lambda: (status("md", "iris").get("rollout")
                                                           or {}).get("version") == new, 120)
        tl.mark(f"canary of v{new} started", "md/iris")
        tl.wait("the deployment to serve the new champion", lambda: (
            (s := status("md", "iris")).get("champion") == new and s.get("phase") == "Ready"
            and not s.get("rollout")), 420)
        tl.wait("answers from the new champion", lambda: traffic.answers[new] >= 20, 60)
        md = status("md", "iris")
        tl.mark(f"serving {md['traffic']}: champion v{new}, control v{md.get('challenger')}",
                "md/iris")
    finally:
        traffic.stop.set()
        traffic.join(timeout=15)
    retrains = get("tr", selector="mlops.dev/deployment=iris") or []
    return LoopResult(tl, first, new, retrains, traffic.answers, traffic.failed())


def alerts_now(prom: str, namespace: str, state: str | None = None) -> list[dict[str, Any]]:
    """ModelFeatureDrift alerts of the loop's deployment (pending or firing, or ``state``)."""
    sel = f'alertname="ModelFeatureDrift",namespace="{namespace}",deployment="iris"'
    if state:
        sel += f',alertstate="{state}"'
    r = httpx.get(f"{prom}/api/v1/query", params={"query": f"ALERTS{{{sel}}}"}, timeout=10)
    return list(r.json()["data"]["result"])


def drift_scores(prom: str, namespace: str) -> dict[str, float]:
    """The largest feature PSI of each variant of the loop's deployment."""
    q = (f'max by (variant) (mlops_runtime_feature_drift_psi{{namespace="{namespace}",'
         f'deployment="iris"}})')
    r = httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10)
    return {x["metric"]["variant"]: float(x["value"][1]) for x in r.json()["data"]["result"]}


def dict_text(counts: Counter[str]) -> str:
    return " ".join(f"v{k}={n}" if k.isdigit() else f"{k}={n}" for k, n in sorted(counts.items()))
