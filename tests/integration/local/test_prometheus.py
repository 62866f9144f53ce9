"""Prometheus in the local stack finds annotated pods through the API server and scrapes them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mlops_localstack.cluster import Cluster, poll

pytestmark = pytest.mark.integration

PORT = 9464
EXPORTER = (
    "import os, time\n"
    "from prometheus_client import Gauge, start_http_server\n"
    "Gauge('localstack_test_value', 'what the test looks for').set(42)\n"
    f"start_http_server({PORT}, addr=os.environ['POD_IP'])\n"
    "while True: time.sleep(3600)\n"
)


def exporter_pod(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": {
            "mlops.dev/deployment": "iris", "mlops.dev/variant": "champion",
            "mlops.dev/version": "3"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "exporter", "image": "python:3.11", "command": ["python", "-c", EXPORTER],
                # a declared port that is not the metrics port: the annotation must win
                "ports": [{"containerPort": PORT + 1, "name": "admin"}],
                "env": [{"name": "POD_IP",
                         "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            }],
        },
    }


@pytest.fixture
def pod_ips(cluster: Cluster, node: Any, namespace: str) -> dict[str, str]:
    """Two exporter pods, ``scraped`` (annotated, metrics path /stats) and ``ignored``."""
    if node is None:
        pytest.skip("needs the node stand-in: Prometheus reaches pods by their loopback IPs")
    pods = [
        exporter_pod("scraped", {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                                 "prometheus.io/path": "/stats"}),
        exporter_pod("ignored", {}),
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(pods))

    def running_ips() -> dict[str, str] | None:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-o",
                              "jsonpath={range .items[*]}{.metadata.name} {.status.phase} "
                              "{.status.podIP}{'\\n'}{end}").stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        ips = {r[0]: r[2] for r in rows if len(r) == 3 and r[1] == "Running"}
        return ips if len(ips) == 2 else None

    return poll("both exporter pods Running with a pod IP", running_ips, timeout=60)


def test_annotated_pod_is_scraped_with_its_labels(
    prometheus: Any, pod_ips: dict[str, str], namespace: str
) -> None:
    query = f'localstack_test_value{{namespace="{namespace}"}}'
    series = poll(f"{query} in Prometheus", lambda: prometheus.query(query), timeout=60)
    assert len(series) == 1, series
    labels = series[0]["metric"]
    assert labels["pod"] == "scraped"
    assert labels["namespace"] == namespace
    assert (labels["deployment"], labels["variant"], labels["version"]) == ("iris", "champion", "3")
    # the target is the pod IP the node stand-in reported in status.podIP
    assert labels["instance"] == f"{pod_ips['scraped']}:{PORT}"
    assert series[0]["value"][1] == "42"


def test_pod_without_annotation_is_discovered_but_not_scraped(
    prometheus: Any, pod_ips: dict[str, str], namespace: str
) -> None:
    def ours(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {t["discoveredLabels"]["__meta_kubernetes_pod_name"]: t for t in targets
                if t["discoveredLabels"].get("__meta_kubernetes_namespace") == namespace}

    def both_discovered() -> tuple[dict[str, Any], dict[str, Any]] | None:
        targets = prometheus.targets()
        active, dropped = ours(targets["activeTargets"]), ours(targets["droppedTargets"])
        if "scraped" in active and active["scraped"]["health"] == "up" and "ignored" in dropped:
            return active, dropped
        return None

    active, dropped = poll("the scraped pod up and the ignored one dropped", both_discovered,
                           timeout=60)
    assert set(active) == {"scraped"}
    assert active["scraped"]["scrapeUrl"] == f"http://{pod_ips['scraped']}:{PORT}/stats"
    assert dropped["ignored"]["discoveredLabels"]["__meta_kubernetes_pod_ip"] == pod_ips["ignored"]
    up = prometheus.query(f'up{{namespace="{namespace}"}}')
    assert [s["metric"]["pod"] for s in up] == ["scraped"]
