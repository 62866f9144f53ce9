"""The wiring the local stack's Prometheus needs: the project's rules (as rendered for the demo)
load in the real Prometheus, and ``PrometheusServer(alertmanager_url=...)`` finds the real
Alertmanager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops_localstack.alertmanager import AlertmanagerServer, render_rules
from mlops_localstack.cluster import Cluster, poll
from mlops_localstack.prometheus import PrometheusServer

pytestmark = pytest.mark.integration


def _get(url: str) -> Any:
    return httpx.get(url, timeout=10).json()["data"]


def test_prometheus_loads_the_rules_and_finds_alertmanager(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    am = AlertmanagerServer(tmp_path / "am", receiver_url="http://127.0.0.1:9/api/v1/alerts",
                            token="t").start()
    try:
        rules = render_rules(tmp_path / "rules", for_overrides={"ModelFeatureDrift": "30s"})
        prom = PrometheusServer(tmp_path / "prom", kubeconfig=cluster.kubeconfig,
                                rule_files=rules, alertmanager_url=am.url).start()
        try:
            groups = _get(f"{prom.url}/api/v1/rules")["groups"]
            loaded = {r["name"]: r for g in groups for r in g["rules"]}
            assert set(loaded) == {"ModelFeatureDrift", "ModelHighErrorRate",
                                   "ModelHighLatencyP95", "ModelNoTraffic"}
            assert loaded["ModelFeatureDrift"]["duration"] == 30
            poll("the rules to be evaluated", lambda: all(
                r["health"] == "ok" for g in _get(f"{prom.url}/api/v1/rules")["groups"]
                for r in g["rules"]), timeout=30)
            active = poll("Prometheus to discover Alertmanager", lambda: _get(
                f"{prom.url}/api/v1/alertmanagers")["activeAlertmanagers"], timeout=30)
            assert active[0]["url"] == f"{am.url}/api/v2/alerts"
        finally:
            prom.stop()
    finally:
        am.stop()
