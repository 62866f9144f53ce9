"""The node stand-in's API traffic: the `kubernetes` client vs a hand-written httpx client.

Both talk to the same real kube-apiserver (started here, or ``--kubeconfig``), one after the
other, in one run: N pod-status merge patches, N pod GETs, and a watch replaying N events.
The `kubernetes` side is exactly what the stand-in uses (``mlops_localstack.node.api``); the
httpx side is what its former hand-written client (``node/kube.py``) did.

    .venv/bin/python bench/localstack/kube_clients.py [-n 300] [--kubeconfig K]
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from kubernetes import client, config

from mlops_localstack.node.api import MERGE_PATCH, PodWatch, connect, raw

NS = "default"


def httpx_client(kubeconfig: Path) -> httpx.Client:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg,
                            persist_config=False)
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return httpx.Client(base_url=cfg.host, verify=ctx, timeout=15)


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def watch_replay_httpx(http: httpx.Client, rv: str, n: int) -> float:
    t = time.perf_counter()
    seen = 0
    with http.stream("GET", "/api/v1/pods", params={"watch": "true", "resourceVersion": rv,
                                                     "timeoutSeconds": "30"}) as resp:
        for line in resp.iter_lines():
            if line.strip() and json.loads(line)["type"] == "MODIFIED":
                seen += 1
                if seen == n:
                    break
    return time.perf_counter() - t


def watch_replay_kubernetes(core: client.CoreV1Api, rv: str, n: int) -> float:
    t = time.perf_counter()
    seen = 0
    pw = PodWatch(core)
    for event in pw.events(rv, timeout_seconds=30):
        if event["type"] == "MODIFIED":
            seen += 1
            if seen == n:
                pw.stop()
                break
    return time.perf_counter() - t


def run(kubeconfig: Path, n: int) -> None:
    api, _ = connect(kubeconfig)
    core = client.CoreV1Api(api)
    http = httpx_client(kubeconfig)
    try:  # without a controller manager nobody creates it
        raw(core.create_namespaced_service_account, NS,
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    pods = {}
    for side in ("httpx", "kubernetes"):
        name = f"bench-{side}-{int(time.time() * 1000) % 100000}"
        raw(core.create_namespaced_pod, NS, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "x"}]}})
        pods[side] = name
    path = f"/api/v1/namespaces/{NS}/pods/{pods['httpx']}"

    def patch_body(i: int) -> dict:
        return {"status": {"message": f"patch {i}"}}

    results: dict[str, dict[str, list[float] | float]] = {"httpx": {}, "kubernetes": {}}
    for rnd in range(2):  # the second round is the one reported (connections warm)
        start_rv = {}
        for side in ("httpx", "kubernetes"):
            start_rv[side] = raw(core.read_namespaced_pod, pods[side], NS)["metadata"][
                "resourceVersion"]
        base = 1000 * rnd
        results["httpx"]["patch"] = timed(lambda i, base=base: http.patch(
            path + "/status", content=json.dumps(patch_body(i + base)),
            headers={"Content-Type": MERGE_PATCH}).raise_for_status(), n)
        results["kubernetes"]["patch"] = timed(lambda i, base=base: raw(
            core.patch_namespaced_pod_status, pods["kubernetes"], NS, patch_body(i + base),
            _content_type=MERGE_PATCH), n)
        results["httpx"]["get"] = timed(lambda i: http.get(path).json(), n)
        results["kubernetes"]["get"] = timed(
            lambda i: raw(core.read_namespaced_pod, pods["kubernetes"], NS), n)
        results["httpx"]["watch"] = watch_replay_httpx(http, start_rv["httpx"], n)
        results["kubernetes"]["watch"] = watch_replay_kubernetes(core, start_rv["kubernetes"], n)
    for side in ("httpx", "kubernetes"):
        raw(core.delete_namespaced_pod, pods[side], NS)
    print(f"{n} operations each, second (warm) round; times per operation")
    print(f"{'':12}{'patch p50':>11}{'patch p95':>11}{'get p50':>10}{'watch/event':>13}")
    for side, r in results.items():
        p = sorted(r["patch"])  # type: ignore[arg-type]
        g = sorted(r["get"])  # type: ignore[arg-type]
        print(f"{side:12}{statistics.median(p) * 1e3:9.2f}ms{p[int(0.95 * n)] * 1e3:9.2f}ms"
              f"{statistics.median(g) * 1e3:8.2f}ms{r['watch'] / n * 1e6:10.0f}us")  # type: ignore[operator]
    k, h = results["kubernetes"], results["httpx"]
    print("ratio kubernetes/httpx: patch p50 "
          f"{statistics.median(k['patch']) / statistics.median(h['patch']):.2f}, get p50 "  # type: ignore[arg-type]
          f"{statistics.median(k['get']) / statistics.median(h['get']):.2f}, watch "  # type: ignore[arg-type]
          f"{k['watch'] / h['watch']:.2f}")  # type: ignore[operator]
    http.close()
    api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--kubeconfig", type=Path, default=None)
    args = parser.parse_args()
    if args.kubeconfig:
        run(args.kubeconfig, args.n)
        return
    from mlops_localstack.controlplane import ControlPlane

    with tempfile.TemporaryDirectory() as tmp, ControlPlane(Path(tmp), controller_manager=False) as cp:
        run(cp.kubeconfig, args.n)


if __name__ == "__main__":
    main()
