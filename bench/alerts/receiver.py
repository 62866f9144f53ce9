"""Alert received → TrainingRun created: latency of the operator's webhook, side by side with a
bare client creating the same TrainingRuns on the same apiserver at the same concurrency.

A real control plane (the local stack's binaries) with the CRDs, 100 ModelDeployments with a
retrain template (cooldown 0s, maxConcurrent 10), the receiver in-process on loopback. Each
request is one Alertmanager notification with one firing alert of a distinct episode; the
receiver answers after the TrainingRun exists, so the response time is received → created.
The baseline creates the identical manifests (the receiver's own builder) with ``kube.py``,
skipping what only the receiver does (parse, authenticate, look up the deployment, dedupe,
cooldown and maxConcurrent checks, Events). Target: receiver p99 ≤ 1 s over 1,000 alerts.
Run: ``.venv/bin/python bench/alerts/receiver.py [--alerts 1000] [--concurrency 1 4 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

TOKEN = "bench-token"
DEPLOYMENTS = 100
TEMPLATE = {"model": "iris", "command": ["mlops-runtime", "train"],
            "dataset": {"uri": "sklearn://iris"}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def alert(namespace: str, deployment: str, i: int) -> dict[str, Any]:
    return {"status": "firing",
            "labels": {"alertname": "ModelFeatureDrift", "namespace": namespace,
                       "modeldeployment": deployment, "model": "iris"},
            "annotations": {}, "startsAt": f"2026-11-30T05:00:{i % 60:02d}.{i:09d}Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": f"{i:016x}"}


def notification(a: dict[str, Any]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "mlops", "groupKey": "k",
                       "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
                       "commonAnnotations": {}, "externalURL": "", "alerts": [a]}).encode()


def timed(fn: Any, items: list[Any], concurrency: int) -> list[float]:
    def one(item: Any) -> float:
        start = time.perf_counter()
        fn(item)
        return time.perf_counter() - start

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, items))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    from mlops_localstack.binaries import ensure_binaries
    from mlops_localstack.cluster import Cluster
    from mlops_localstack.controlplane import ControlPlane
    from mlops_localstack.procs import free_port
    from mlops_operator import kube
    from mlops_operator.alerts import ReceiverConfig, start_receiver, stop_receiver
    from mlops_operator.alerts.payload import parse_notification
    from mlops_operator.alerts.retrain import build_retrain_trainingrun
    from mlops_operator.crdgen import write_crds

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        binaries = ensure_binaries()
        cp = ControlPlane(Path(tmp) / "cp", binaries=binaries).start()
        try:
            os.environ["KUBECONFIG"] = str(cp.kubeconfig)
            cluster = Cluster(cp.kubeconfig, kubectl_path=str(binaries.kubectl or "kubectl"))
            cluster.apply_crds(sorted(write_crds(Path(tmp) / "crds")))
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()
            port = free_port()
            handle = asyncio.run_coroutine_threadsafe(start_receiver(config=ReceiverConfig(
                port=port, host="127.0.0.1", token=TOKEN, threads=16)), loop).result(30)
            url = f"http://127.0.0.1:{port}/api/v1/alerts"
            n = 0
            for conc in args.concurrency:
                for side in ("receiver", "bare client"):
                    ns = f"bench-{conc}-{side.split()[0]}"
                    cluster.kubectl("create", "namespace", ns)
                    mds = []
                    for d in range(DEPLOYMENTS):
                        md = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment",
                              "metadata": {"name": f"md{d}", "namespace": ns},
                              "spec": {"model": "iris", "variants": [
                                  {"name": "champion", "modelUri": "models:/iris@champion"}],
                                  "retrain": {"alerts": ["ModelFeatureDrift"], "cooldown": "0s",
                                              "maxConcurrent": 10, "template": TEMPLATE}}}
                        mds.append(kube.create_or_get(md)[0])
                    alerts = [alert(ns, f"md{i % DEPLOYMENTS}", n + i) for i in range(args.alerts)]
                    n += args.alerts
                    if side == "receiver":
                        client = httpx.Client(timeout=30, limits=httpx.Limits(
                            max_connections=conc))

                        def send(a: dict[str, Any], c: httpx.Client = client) -> None:
                            r = c.post(url, content=notification(a), headers={
                                "Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/json"})
                            assert r.json()["results"][0]["action"] == "created", r.text

                        times = timed(send, alerts, conc)
                        client.close()
                    else:
                        by_name = {m["metadata"]["name"]: m for m in mds}
                        now = dt.datetime.now(dt.UTC)
                        manifests = [build_retrain_trainingrun(
                            by_name[a["labels"]["modeldeployment"]],
                            parse_notification(notification(a)).alerts[0], now) for a in alerts]
                        times = timed(lambda m: kube.create_or_get(m), manifests, conc)
                    made = len(kube.list_("mlops.dev/v1alpha1", "TrainingRun", ns))
                    rows.append((conc, side, times, made))
            asyncio.run_coroutine_threadsafe(stop_receiver(handle), loop).result(30)
        finally:
            cp.stop()
    print(f"alert received -> TrainingRun created, {args.alerts} distinct alerts over "
          f"{DEPLOYMENTS} deployments, real kube-apiserver on loopback (2 cores)")
    print("| concurrency | who | created | p50 ms | p99 ms | mean ms | p99 vs bare |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    bare = {c: pct(t, 0.99) for c, s, t, _ in rows if s == "bare client"}
    for conc, side, times, made in rows:
        p99 = pct(times, 0.99)
        print(f"| {conc} | {side} | {made} | {pct(times, 0.5) * 1e3:.0f} | {p99 * 1e3:.0f} | "
              f"{statistics.mean(times) * 1e3:.0f} | {p99 / bare[conc]:.2f}x |")
    worst = max(pct(t, 0.99) for c, s, t, _ in rows if s == "receiver")
    print(f"receiver p99 at worst: {worst * 1e3:.0f} ms (target <= 1000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
