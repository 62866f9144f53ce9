"""ModelDeployments at scale (issue 13: scale covers ModelDeployment too), on the local stack of
``scale.py`` (real etcd, kube-apiserver, kube-controller-manager and MLflow; the operator as a
process scoped to one namespace).

**No node stand-in runs**, so the serving and router pods stay Pending and every
ModelDeployment stays ``Progressing`` — the operator re-checks each one every resync interval,
which makes this the busiest steady state short of a rollout.

1. ``--deployments`` ModelDeployments applied at once (16 client threads), each shaped like the
   example: a ``champion`` variant (90 %) following ``models:/md-scale@champion`` and a
   ``control`` variant (10 %) pinned to version 1 (one registered version, a placeholder source
   nothing reads), the builtin router: the time until all of them have their children (counted
   as their 3 Deployments each: two variants and the router; 10 children in all).
2. Steady state, after one resync interval, over ``--window`` s: operator CPU, apiserver
   requests per second (all clients, by verb and resource), MLflow calls per second (a counting
   proxy between the operator and MLflow), RSS.
3. Edit latency: ``--edits`` times one ModelDeployment gets new variant weights; the time from
   the patch to ``status.observedGeneration`` = the new generation (p50/p99).

    .venv/bin/python bench/operator/md_scale.py --deployments 300 [--window 60] [--edits 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scale import (
    CLIENT_THREADS,
    GROUP,
    VERSION,
    Context,
    CountingProxy,
    Operator,
    Stack,
    wait_observed,
)

MODEL = "md-scale"
NAMESPACE = "md-scale"


def md_manifest(i: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": f"md-{i:04d}"},
            "spec": {"model": MODEL, "variants": variants(90)}}


def variants(champion: int) -> list[dict[str, Any]]:
    """The example's shape: a champion following the alias, a control group pinned to v1."""
    return [{"name": "champion", "modelUri": f"models:/{MODEL}@champion", "weight": champion},
            {"name": "control", "modelUri": f"models:/{MODEL}/1", "weight": 100 - champion}]


def register_champion(uri: str) -> str:
    from mlflow import MlflowClient

    mlflow = MlflowClient(uri, registry_uri=uri)
    mlflow.create_registered_model(MODEL)
    version = mlflow.create_model_version(MODEL, source="s3://bench/model", await_creation_for=0)
    mlflow.set_registered_model_alias(MODEL, "champion", version.version)
    return str(version.version)


def count_deployments(ctx: Context) -> int:
    from kubernetes import client

    from mlops_operator.builders.common import MANAGED_BY, OPERATOR

    apps = client.AppsV1Api(ctx.api)
    return len(apps.list_namespaced_deployment(
        NAMESPACE, label_selector=f"{MANAGED_BY}={OPERATOR}").items)


def run(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from kubernetes import client

    register_champion(ctx.mlflow_uri)
    ctx.create_namespace(NAMESPACE)
    proxy = CountingProxy(ctx.mlflow_uri)
    op = Operator(dict(ctx.env, MLOPS_MLFLOW_TRACKING_URI=proxy.url), ctx.tmp / "md.log",
                  NAMESPACE)
    custom = client.CustomObjectsApi(ctx.api)
    out: dict[str, Any] = {"rss_idle": op.rss()}
    try:
        cpu0, t0 = op.cpu(), time.perf_counter()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            list(pool.map(lambda i: custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "modeldeployments", md_manifest(i)),
                range(args.deployments)))
        out["applied_s"] = time.perf_counter() - t0
        want = 3 * args.deployments
        while (found := count_deployments(ctx)) < want:
            if time.perf_counter() - t0 > args.timeout:
                raise SystemExit(f"only {found}/{want} Deployments; see {ctx.tmp / 'md.log'}")
            time.sleep(1)
        out["children_s"] = time.perf_counter() - t0
        out["cpu_to_children_s"] = op.cpu() - cpu0
        out["rss_children"] = op.rss()
        time.sleep(args.resync + 5)  # past the first resync of every ModelDeployment
        c0, n0, k0, w0 = op.cpu(), proxy.snapshot(), ctx.apiserver_requests(), time.perf_counter()
        time.sleep(args.window)
        c1, n1, k1, w1 = op.cpu(), proxy.snapshot(), ctx.apiserver_requests(), time.perf_counter()
        span = w1 - w0
        kube = k1 - k0
        out.update(window_s=span, cpu_pct=100 * (c1 - c0) / span,
                   mlflow_per_s=sum((n1 - n0).values()) / span,
                   mlflow_paths=dict(n1 - n0),
                   apiserver_per_s=sum(kube.values()) / span,
                   apiserver_by_verb={k: round(v / span, 2) for k, v in kube.most_common(12)},
                   rss=op.rss(), hwm=op.hwm())
        lat = edit_latencies(custom, args)
        out.update(edit_p50=statistics.median(lat),
                   edit_p99=sorted(lat)[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
                   edits=len(lat))
        return out
    finally:
        op.stop()


def edit_latencies(custom: Any, args: argparse.Namespace) -> list[float]:
    rng = random.Random(13)
    out = []
    for i in range(args.edits):
        name = f"md-{rng.randrange(args.deployments):04d}"
        t0 = time.perf_counter()
        patched = custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "modeldeployments", name,
            {"spec": {"variants": variants(80 + i % 10)}})
        wait_observed(custom, NAMESPACE, "modeldeployments", patched, t0)
        out.append(time.perf_counter() - t0)
        time.sleep(0.5)
    return out


def report(args: argparse.Namespace, r: dict[str, Any], total: float) -> None:
    n = args.deployments
    print(f"\n{n} ModelDeployments (two variants, one following an alias; builtin router; pods Pending, "
          f"no node), operator MLOPS_WORKERS={args.workers}, MLOPS_RESYNC_SECONDS={args.resync}")
    print("| applied | all children | operator CPU until then | RSS idle / children / steady "
          "(VmHWM) |")
    print("|---:|---:|---:|---:|")
    print(f"| {r['applied_s']:.1f} s | {r['children_s']:.1f} s | {r['cpu_to_children_s']:.1f} s "
          f"| {r['rss_idle']:.0f} / {r['rss_children']:.0f} / {r['rss']:.0f} MB "
          f"({r['hwm']:.0f} MB) |")
    print(f"\nsteady state over {r['window_s']:.0f} s:")
    print("| operator CPU | apiserver requests/s (all clients) | per ModelDeployment per resync "
          "| MLflow calls/s | edit p50 | edit p99 |")
    print("|---:|---:|---:|---:|---:|---:|")
    per = r["apiserver_per_s"] * args.resync / n
    print(f"| {r['cpu_pct']:.1f} % | {r['apiserver_per_s']:.1f} | {per:.1f} "
          f"| {r['mlflow_per_s']:.2f} | {r['edit_p50']:.2f} s | {r['edit_p99']:.2f} s "
          f"({r['edits']} edits) |")
    print(f"apiserver requests/s by verb and resource: {r['apiserver_by_verb']}")
    print(f"MLflow calls in the window by path: {r['mlflow_paths']}")
    print(f"\n(total {total / 60:.1f} min)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8, help="MLOPS_WORKERS of the operator")
    parser.add_argument("--resync", type=float, default=30.0, help="MLOPS_RESYNC_SECONDS")
    parser.add_argument("--window", type=float, default=60.0, help="steady-state window (s)")
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--operator-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--logs", type=Path, help="keep the operator log in this directory")
    args = parser.parse_args()
    args.settle, args.trace_memory = 0.0, False  # what Context reads and this bench does not use

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        stack = Stack(Path(tmp_name) / "stack")
        try:
            result = run(Context(stack, Path(tmp_name), args), args)
        finally:
            stack.stop()
    report(args, result, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
