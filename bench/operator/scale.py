"""The operator at scale, measured side by side with a bare client in one run (issue 13, Scale).

On a local stack of its own (real etcd, kube-apiserver and kube-controller-manager, a real
MLflow server; **no node stand-in**: the Jobs' pods are created by the Job controller and stay
Pending, since only "the Job exists" is measured), the operator runs as a process scoped to one
namespace per measurement, started fresh each time (``mlops-operator run``, as the stack does).

1. **TrainingRuns → Jobs.** ``--runs`` TrainingRuns are created at once (16 client threads);
   the clock runs from the first create until a watch has seen every Job. The baseline does the
   same API work with the operator's own code (``mlflow_utils.make_client``, ``tracking``,
   ``kube.create_or_get``, the operator's Job builder) on the same apiserver and MLflow server, at
   the operator's concurrency (``MLOPS_WORKERS`` threads): per run, look the MLflow run up by its
   uid tag, create it, create the Job (the experiment id is resolved once). Rounds alternate
   which side goes first; the median ratio is reported (target ≤ 1.5×).
2. **Operator memory**: RSS when every Job exists, and its high-water mark (VmHWM).
3. **Promoted ModelVersions at steady state** (``--versions``, 0 skips): versions registered
   through the MLflow API directly (``--models`` registered models, one alias per version, a
   placeholder source, s3://bench/model: nothing reads it), one ModelVersion object per version
   (``version`` pinned, ``promote.alias`` its own alias, no gates), all promoted by the
   operator. Then for ``--window`` seconds: operator CPU, MLflow calls per second (counted by
   a loopback proxy between the operator and MLflow; registry calls separately) and RSS.
4. **Edit latency**: ``--edits`` times, one ModelVersion among them gets a new ``spec.tags``
   value; time from the patch until ``status.observedGeneration`` equals the new generation.

Run (``--runs 100 --rounds 2 --versions 100 --models 2`` took 23.5 min on a machine at load
average 30-60; the defaults, 1,000 of each, were not run yet; results in docs/scale.md)::

    .venv/bin/python bench/operator/scale.py [--runs 1000] [--rounds 3] [--versions 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

GROUP, VERSION = "mlops.dev", "v1alpha1"
CLIENT_THREADS = 16  # the "kubectl apply" of many objects at once
MODEL = "scale"


# -- the operator process --------------------------------------------------------------------
def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Operator:
    """``mlops-operator run --namespace <ns>`` as a child process (the stack's own starter)."""

    def __init__(self, env: dict[str, str], log: Path, namespace: str,
                 trace: Path | None = None) -> None:
        import sys

        import httpx

        from mlops_localstack.procs import ManagedProcess, free_port
        from mlops_localstack.stack import start_operator

        env = dict(env, MLOPS_METRICS_PORT="0", MLOPS_ALERT_RECEIVER_PORT=str(free_port()),
                   MLOPS_ALERT_RECEIVER_HOST="127.0.0.1")
        env.pop("MLOPS_ALERT_RECEIVER_TOKEN", None)
        self.trace = trace
        if trace is None:
            self.proc = start_operator(env, log, namespaces=[namespace])
        else:  # the same command under tracemalloc (traced_operator.py)
            live = f"http://127.0.0.1:{free_port()}/healthz"
            self.proc = ManagedProcess("operator", [
                sys.executable, str(Path(__file__).with_name("traced_operator.py")), "run",
                "--liveness", live, f"--namespace={namespace}"], log,
                env=dict(env, MLOPS_TRACE_OUT=str(trace))).start()
            self.proc.wait_until(lambda: httpx.get(live, timeout=2).status_code == 200,
                                 timeout=300, what="live")
        assert self.proc.pid is not None
        self.pid: int = self.proc.pid

    def rss(self) -> float:
        return rss_mb(self.pid)

    def hwm(self) -> float:
        return rss_mb(self.pid, "VmHWM")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def traced(self) -> dict[str, Any] | None:
        """Python allocations by package (``--trace-memory`` only)."""
        import signal

        if self.trace is None:
            return None
        self.trace.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                return dict(json.loads(self.trace.read_text()))
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.5)
        return None

    def stop(self) -> None:
        self.proc.stop()


# -- counting ---------------------------------------------------------------------------------
class JobWatch(threading.Thread):
    """Watch the Jobs of a namespace; when the ``n``-th distinct one was seen."""

    def __init__(self, api: Any, namespace: str, n: int) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace, self.n = api, namespace, n
        self.seen: set[str] = set()
        self.done_at: float | None = None
        self.ready = threading.Event()
        self.finished = threading.Event()

    def run(self) -> None:
        from kubernetes import client, watch

        batch = client.BatchV1Api(self.api)
        rv = batch.list_namespaced_job(self.namespace).metadata.resource_version
        self.ready.set()
        while self.done_at is None:
            try:
                for ev in watch.Watch().stream(batch.list_namespaced_job, self.namespace,
                                               resource_version=rv, timeout_seconds=60):
                    rv = ev["object"].metadata.resource_version
                    if ev["type"] == "ADDED":
                        self.seen.add(ev["object"].metadata.name)
                        if len(self.seen) >= self.n:
                            self.done_at = time.perf_counter()
                            break
            except Exception:  # a broken stream (a loaded apiserver): list, then watch again
                jobs = batch.list_namespaced_job(self.namespace)
                rv = jobs.metadata.resource_version
                self.seen.update(j.metadata.name for j in jobs.items)
                if len(self.seen) >= self.n:
                    self.done_at = time.perf_counter()
        self.finished.set()


class CountingProxy:
    """A loopback HTTP proxy in front of MLflow that counts the requests by path."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.url = ""
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait(30)

    def _serve(self, started: threading.Event) -> None:
        import asyncio

        from aiohttp import ClientSession, TCPConnector, web

        async def main() -> None:
            session = ClientSession(connector=TCPConnector(limit=64))

            async def handle(request: web.Request) -> web.Response:
                with self.lock:
                    self.counts[request.path] += 1
                body = await request.read()
                async with session.request(
                    request.method, self.upstream + request.path_qs, data=body,
                    headers={k: v for k, v in request.headers.items()
                             if k.lower() not in ("host", "content-length")},
                ) as up:
                    data = await up.read()
                    return web.Response(body=data, status=up.status, headers={
                        "Content-Type": up.headers.get("Content-Type", "application/json")})

            app = web.Application(client_max_size=1 << 26)
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            started.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)


# -- 1. TrainingRuns -> Jobs --------------------------------------------------------------------
def tr_manifest(i: int, experiment: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun",
            "metadata": {"name": f"tr-{i:04d}"},
            "spec": {"model": MODEL, "experiment": experiment,
                     "command": ["mlops-runtime", "train"]}}


def operator_side(ctx: Any, namespace: str, n: int) -> dict[str, Any]:
    from kubernetes import client

    experiment = f"{namespace}-exp"
    ctx.create_namespace(namespace)
    op = Operator(ctx.env, ctx.tmp / f"{namespace}.log", namespace,
                  trace=ctx.tmp / f"{namespace}.trace.json" if ctx.trace else None)
    out: dict[str, Any] = {}
    try:
        idle_rss, cpu0 = op.rss(), op.cpu()
        watcher = JobWatch(ctx.api, namespace, n)
        watcher.start()
        watcher.ready.wait(60)
        custom = client.CustomObjectsApi(ctx.api)
        before = ctx.requests()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            list(pool.map(lambda i: custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingruns", tr_manifest(i, experiment)), range(n)))
        applied = time.perf_counter() - t0
        if not watcher.finished.wait(ctx.timeout):
            raise SystemExit(f"{namespace}: only {len(watcher.seen)}/{n} Jobs after "
                             f"{ctx.timeout}s; see {ctx.tmp / (namespace + '.log')}")
        assert watcher.done_at is not None
        out.update(seconds=watcher.done_at - t0, applied_s=applied, rss_idle=idle_rss,
                   rss=op.rss(), cpu_s=op.cpu() - cpu0, **ctx.request_delta(before))
        time.sleep(ctx.settle)  # the Jobs' own events (pods created) still come in
        out.update(rss_settled=op.rss(), hwm=op.hwm())
        if ctx.trace:
            out["traced"] = op.traced()
        return out
    finally:
        op.stop()
        ctx.clean(namespace)
        text = (ctx.tmp / f"{namespace}.log").read_text(errors="replace")
        out["mlflow_retries"] = text.count("MLflow unreachable")
        out["pool_full"] = text.count("Connection pool is full")


def baseline_side(ctx: Any, namespace: str, n: int) -> dict[str, float]:
    from mlops_operator import kube, tracking
    from mlops_operator.api import TrainingRunSpec
    from mlops_operator.builders.trainingrun import build_job, experiment_name, run_tags
    from mlops_operator.mlflow_utils import is_unreachable, make_client

    experiment = f"{namespace}-exp"
    ctx.create_namespace(namespace)
    mlflow = make_client(ctx.mlflow_uri, 10.0)
    watcher = JobWatch(ctx.api, namespace, n)
    watcher.start()
    watcher.ready.wait(60)
    specs = [(f"tr-{i:04d}", str(uuid.uuid4()),
              TrainingRunSpec.model_validate(tr_manifest(i, experiment)["spec"])) for i in range(n)]
    before = ctx.requests()
    t0 = time.perf_counter()
    exp_id = tracking.ensure_experiment(mlflow, experiment)

    retries = Counter[str]()

    def one(item: tuple[str, str, TrainingRunSpec]) -> None:
        name, uid, spec = item
        while True:  # a bare client retries a timeout at once (the operator waits 10 s)
            try:
                run, _ = tracking.ensure_run(mlflow, exp_id, uid, name,
                                             run_tags(namespace, name, uid, spec), spec.params)
                break
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                retries["mlflow"] += 1
        job = build_job(name, namespace, uid, spec, run.info.run_id, ctx.mlflow_uri,
                        experiment_name(spec), "ghcr.io/mlops-operator/mlops-runtime:0.1.0")
        job["metadata"].pop("ownerReferences", None)  # no owner object: the GC would delete it
        kube.create_or_get(job)

    with ThreadPoolExecutor(ctx.workers) as pool:
        list(pool.map(one, specs))
    if not watcher.finished.wait(ctx.timeout):
        raise SystemExit(f"baseline: only {len(watcher.seen)}/{n} Jobs")
    assert watcher.done_at is not None
    out = {"seconds": watcher.done_at - t0, "mlflow_retries": retries["mlflow"],
           **ctx.request_delta(before)}
    ctx.clean(namespace)
    return out


# -- 3./4. promoted ModelVersions ----------------------------------------------------------------
def register_versions(uri: str, models: int, versions: int) -> list[tuple[str, str]]:
    from mlflow import MlflowClient

    mlflow = MlflowClient(uri, registry_uri=uri)
    names = [f"{MODEL}-{j}" for j in range(models)]
    for name in names:
        mlflow.create_registered_model(name)

    def one(j: int) -> tuple[str, str]:
        mv = mlflow.create_model_version(names[j % models], source="s3://bench/model",
                                         await_creation_for=0)
        return names[j % models], str(mv.version)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(versions)))


def mv_manifest(model: str, version: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelVersion",
            "metadata": {"name": f"{model}-v{version}"},
            "spec": {"model": model, "version": version, "promote": {"alias": f"a{version}"}}}


def promoted_steady_state(ctx: Any, args: argparse.Namespace) -> dict[str, Any]:
    from kubernetes import client

    namespace = "mv-scale"
    ctx.create_namespace(namespace)
    t = time.perf_counter()
    pairs = register_versions(ctx.mlflow_uri, args.models, args.versions)
    print(f"registered {len(pairs)} versions of {args.models} models in "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    proxy = CountingProxy(ctx.mlflow_uri)
    env = dict(ctx.env, MLOPS_MLFLOW_TRACKING_URI=proxy.url)
    op = Operator(env, ctx.tmp / "mv.log", namespace)
    custom = client.CustomObjectsApi(ctx.api)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            list(pool.map(lambda mv: custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelversions", mv_manifest(*mv)), pairs))

        def promoted() -> int:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                         "modelversions")["items"]
            return sum((i.get("status") or {}).get("phase") == "Promoted" for i in items)

        done = 0
        while (done := promoted()) < len(pairs):
            if time.perf_counter() - t0 > ctx.timeout:
                raise SystemExit(f"only {done}/{len(pairs)} ModelVersions promoted; see "
                                 f"{ctx.tmp / 'mv.log'}")
            time.sleep(2)
        all_promoted = time.perf_counter() - t0
        time.sleep(args.resync + 5)  # past the first alias-watch round: steady state
        c0, n0, w0 = op.cpu(), proxy.snapshot(), time.perf_counter()
        time.sleep(args.window)
        c1, n1, w1 = op.cpu(), proxy.snapshot(), time.perf_counter()
        span = w1 - w0
        calls = n1 - n0
        registry = sum(v for k, v in calls.items() if "registered-models" in k
                       or "model-versions" in k)
        steady = {"promote_all_s": all_promoted, "window_s": span,
                  "cpu_pct": 100 * (c1 - c0) / span, "calls_per_s": sum(calls.values()) / span,
                  "registry_per_s": registry / span, "paths": dict(calls), "rss": op.rss(),
                  "hwm": op.hwm()}
        latencies = edit_latencies(custom, namespace, pairs, args.edits)
        steady["edit_p50"] = statistics.median(latencies)
        steady["edit_p99"] = sorted(latencies)[min(len(latencies) - 1,
                                                   round(0.99 * (len(latencies) - 1)))]
        steady["edits"] = len(latencies)
        steady["rss_after_edits"] = op.rss()
        return steady
    finally:
        op.stop()


def edit_latencies(custom: Any, namespace: str, pairs: list[tuple[str, str]],
                   edits: int) -> list[float]:
    rng = random.Random(13)
    out = []
    for i in range(edits):
        model, version = rng.choice(pairs)
        name = f"{model}-v{version}"
        t0 = time.perf_counter()
        patched = custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelversions", name, {"spec": {"tags": {"edit": str(i)}}})
        wait_observed(custom, namespace, "modelversions", patched, t0)
        out.append(time.perf_counter() - t0)
        time.sleep(0.5)
    return out


def wait_observed(custom: Any, namespace: str, plural: str, patched: dict[str, Any],
                  t0: float) -> None:
    """Until the object's ``status.observedGeneration`` reaches the patch's generation."""
    name, generation = patched["metadata"]["name"], patched["metadata"]["generation"]
    while True:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        if (obj.get("status") or {}).get("observedGeneration") == generation:
            return
        if time.perf_counter() - t0 > 120:
            raise SystemExit(f"edit of {name} not observed after 120 s")
        time.sleep(0.02)


# -- the run ----------------------------------------------------------------------------------
class Context:
    def __init__(self, stack: Any, tmp: Path, args: argparse.Namespace) -> None:
        from kubernetes import config

        from mlops_localstack.cluster import Cluster

        self.tmp = args.logs or tmp
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(Path(stack.state["kubeconfig"]), kubectl_path=stack.state["kubectl"])
        self.mlflow_uri = stack.state["mlflowTrackingUri"]
        self.mlflow_log = stack.mlflow.workdir / "mlflow.log"
        self.api = config.new_client_from_config(config_file=stack.state["kubeconfig"])
        self.api.configuration.connection_pool_maxsize = 32
        self.workers = args.workers
        self.timeout = args.timeout
        self.settle = args.settle
        self.trace = args.trace_memory
        self.env = dict(self.cluster.env, MLOPS_MLFLOW_TRACKING_URI=self.mlflow_uri,
                        MLOPS_WORKERS=str(args.workers), MLOPS_RESYNC_SECONDS=str(args.resync))
        self.env.update(kv.split("=", 1) for kv in args.operator_env)
        from mlops_operator import kube

        # the baseline's kube.py gets a client of its own (kubernetes reads KUBECONFIG at import)
        kube._api = config.new_client_from_config(config_file=stack.state["kubeconfig"])

    def mlflow_requests(self) -> Counter[str]:
        """Requests the MLflow server has logged so far, by path."""
        out: Counter[str] = Counter()
        for line in self.mlflow_log.read_text(errors="replace").splitlines():
            if '" 1' in line or '" 2' in line or '" 3' in line or '" 4' in line or '" 5' in line:
                _, _, request = line.partition(' - "')
                parts = request.split(" ")
                if len(parts) > 1 and parts[1].startswith("/api/"):
                    out[parts[1].split("?")[0].removeprefix("/api/2.0/mlflow/")] += 1
        return out

    def apiserver_requests(self) -> Counter[str]:
        """``apiserver_request_total`` by verb and resource (everyone's requests)."""
        text = self.cluster.kubectl("get", "--raw", "/metrics").stdout
        out: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                key = f"{labels.get('verb')} {labels.get('resource')}"
                out[key] += int(float(line.rsplit(" ", 1)[1]))
        return out

    def requests(self) -> tuple[Counter[str], Counter[str]]:
        return self.mlflow_requests(), self.apiserver_requests()

    def request_delta(self, before: tuple[Counter[str], Counter[str]]) -> dict[str, Any]:
        mlflow, kube = self.requests()
        dm, dk = mlflow - before[0], kube - before[1]
        return {"mlflow_calls": sum(dm.values()), "apiserver_calls": sum(dk.values()),
                "mlflow_by_path": dict(dm.most_common(8)),
                "apiserver_by_verb": dict(dk.most_common(16))}

    def create_namespace(self, namespace: str) -> None:
        self.cluster.kubectl("create", "namespace", namespace)

    def clean(self, namespace: str) -> None:
        """Delete the Jobs (their Pending pods go with them) so later rounds start level."""
        self.cluster.kubectl("delete", "jobs", "--all", "-n", namespace, "--wait=false",
                             timeout=300)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            out = self.cluster.kubectl("get", "pods,jobs", "-n", namespace, "-o", "name",
                                       check=False).stdout.split()
            if not out:
                return
            time.sleep(2)


class Stack:
    """The local stack's components this benchmark needs: control plane (with the Job
    controller), CRDs, MLflow; no node, Prometheus, Alertmanager or operator. Composed here
    rather than with ``LocalStack`` for longer startup timeouts (a loaded machine misses the
    defaults)."""

    def __init__(self, state_dir: Path) -> None:
        from mlops_localstack.binaries import ensure_binaries
        from mlops_localstack.cluster import Cluster
        from mlops_localstack.controlplane import ControlPlane
        from mlops_localstack.mlflow_server import MlflowServer
        from mlops_operator.crdgen import write_crds

        binaries = ensure_binaries()
        self.control_plane = ControlPlane(state_dir / "controlplane", binaries=binaries,
                                          startup_timeout=600)
        self.mlflow: Any = None
        try:
            self.control_plane.start()
            kubectl = str(binaries.kubectl) if binaries.kubectl else "kubectl"
            Cluster(self.control_plane.kubeconfig, kubectl_path=kubectl).apply_crds(
                sorted(write_crds(state_dir / "crds")), timeout=300)
            self.mlflow = MlflowServer(state_dir / "mlflow", startup_timeout=900).start()
        except BaseException:
            self.stop()
            raise
        self.state = {"kubeconfig": str(self.control_plane.kubeconfig), "kubectl": kubectl,
                      "mlflowTrackingUri": self.mlflow.tracking_uri}

    def stop(self) -> None:
        if self.mlflow:
            self.mlflow.stop()
        self.control_plane.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="TrainingRuns per round")
    parser.add_argument("--rounds", type=int, default=3, help="0: skip part 1")
    parser.add_argument("--workers", type=int, default=8,
                        help="MLOPS_WORKERS of the operator = the baseline's threads")
    parser.add_argument("--versions", type=int, default=1000,
                        help="promoted ModelVersions (0: skip parts 3 and 4)")
    parser.add_argument("--models", type=int, default=10, help="registered models they spread over")
    parser.add_argument("--window", type=float, default=60.0, help="steady-state window (s)")
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--resync", type=float, default=30.0, help="MLOPS_RESYNC_SECONDS")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds after the last Job before the settled RSS")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--operator-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the operator process (repeatable)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="run the operator under tracemalloc; print where its memory goes")
    parser.add_argument("--logs", type=Path, help="keep the operator logs in this directory")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack(tmp / "stack")
        try:
            ctx = Context(stack, tmp, args)
            rows = []
            for r in range(1, args.rounds + 1):
                sides = ["operator", "baseline"] if r % 2 else ["baseline", "operator"]
                row: dict[str, Any] = {"round": r, "first": sides[0]}
                for side in sides:
                    fn = operator_side if side == "operator" else baseline_side
                    row[side] = fn(ctx, f"{side[:4]}-r{r}", args.runs)
                    print(f"round {r} {side}: {json.dumps(row[side])}", flush=True)
                row["ratio"] = row["operator"]["seconds"] / row["baseline"]["seconds"]
                rows.append(row)
            steady = promoted_steady_state(ctx, args) if args.versions else None
        finally:
            stack.stop()
    report(args, rows, steady, time.perf_counter() - started)
    ok = not rows or statistics.median(r["ratio"] for r in rows) <= 1.5
    return 0 if ok else 1


def report(args: argparse.Namespace, rows: list[dict[str, Any]], steady: dict[str, Any] | None,
           total: float) -> None:
    if rows:
        report_runs(args, rows)
    if steady:
        report_steady(args, steady)
    print(f"\n(total {total / 60:.1f} min)")


def report_runs(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print(f"\n{args.runs} TrainingRuns applied at once -> all {args.runs} Jobs exist "
          f"(operator MLOPS_WORKERS={args.workers}; baseline {args.workers} threads)")
    print("| round | first | operator | (apply) | baseline | ratio | RSS idle | RSS all Jobs "
          "| RSS settled | VmHWM |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        o, b = r["operator"], r["baseline"]
        print(f"| {r['round']} | {r['first']} | {o['seconds']:.1f} s | {o['applied_s']:.1f} s "
              f"| {b['seconds']:.1f} s | {r['ratio']:.2f}x | {o['rss_idle']:.0f} MB "
              f"| {o['rss']:.0f} MB | {o['rss_settled']:.0f} MB | {o['hwm']:.0f} MB |")
    print(f"median ratio: {statistics.median(r['ratio'] for r in rows):.2f}x (target <= 1.5x)")
    print("\n| round | side | MLflow calls | apiserver calls (all clients) | MLflow timeouts "
          "| operator CPU |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        for side in ("operator", "baseline"):
            d = r[side]
            cpu = f"{d['cpu_s']:.1f} s" if "cpu_s" in d else ""
            print(f"| {r['round']} | {side} | {d['mlflow_calls']} | {d['apiserver_calls']} "
                  f"| {d['mlflow_retries']} | {cpu} |")
    print("\napiserver requests per TrainingRun in the window (all clients), by verb and resource:")
    for r in rows:
        for side in ("operator", "baseline"):
            per = {k: round(v / args.runs, 2) for k, v in r[side]["apiserver_by_verb"].items()}
            print(f"round {r['round']} {side}: {per}")


def report_steady(args: argparse.Namespace, steady: dict[str, Any]) -> None:
    if steady:
        print(f"\n{args.versions} promoted ModelVersions ({args.models} registered models), "
              f"steady state over {steady['window_s']:.0f} s "
              f"(MLOPS_RESYNC_SECONDS={args.resync:g}):")
        print(f"| promote all | operator CPU | MLflow calls/s | registry calls/s | RSS | VmHWM "
              f"| edit p50 | edit p99 ({steady['edits']} edits) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {steady['promote_all_s']:.0f} s | {steady['cpu_pct']:.1f} % "
              f"| {steady['calls_per_s']:.2f} | {steady['registry_per_s']:.2f} "
              f"| {steady['rss']:.0f} MB | {steady['hwm']:.0f} MB | {steady['edit_p50']:.2f} s "
              f"| {steady['edit_p99']:.2f} s |")
        print(f"calls in the window by path: {steady['paths']}")
        print(f"RSS after the edits: {steady['rss_after_edits']:.0f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
