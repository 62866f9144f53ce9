"""The local stack's Prometheus config (pod discovery, the operator's /metrics, the project's
rules, Alertmanager) passes `promtool check config` of the same Go build as the server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from mlops_localstack.alertmanager import render_rules
from mlops_localstack.prometheus import cached_promtool, find_prometheus, prometheus_config


def test_the_shipped_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    find_prometheus()  # found or built (with promtool) like `make binaries` does
    promtool = cached_promtool()
    assert promtool.exists(), "make binaries builds promtool beside prometheus"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    rules = render_rules(tmp_path / "rules", for_overrides={"ModelFeatureDrift": "20s"})
    config = prometheus_config(kubeconfig, "2s", rules, "http://127.0.0.1:9093",
                               {"mlops-operator": ["127.0.0.1:8081"]})
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
    broken = dict(config, scrape_configs=[{"job_name": "x", "kubernetes_sd_configs": [
        {"role": "nodes-and-pods"}]}])
    path.write_text(yaml.safe_dump(broken))
    bad = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "nodes-and-pods" in bad.stdout + bad.stderr
