"""The local stack's Prometheus: its scrape config and how its binary is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_localstack.procs import LocalStackError
from mlops_localstack.prometheus import find_prometheus, has_kubernetes_sd, prometheus_config


def test_config_discovers_pods_through_the_kubeconfig_and_keeps_annotated_ones() -> None:
    config = prometheus_config(Path("/k/kubeconfig"), scrape_interval="3s")
    assert config["global"]["scrape_interval"] == "3s"
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "/k/kubeconfig"}]
    keep = job["relabel_configs"][0]
    assert keep == {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                    "regex": "true", "action": "keep"}
    targets = {r.get("target_label"): r["source_labels"] for r in job["relabel_configs"]}
    assert targets["__address__"] == ["__meta_kubernetes_pod_ip",
                                      "__meta_kubernetes_pod_annotation_prometheus_io_port"]
    assert targets["__metrics_path__"] == ["__meta_kubernetes_pod_annotation_prometheus_io_path"]
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"] == ["__meta_kubernetes_pod_name"]
    assert targets["deployment"] == ["__meta_kubernetes_pod_label_mlops_dev_deployment"]
    assert targets["variant"] == ["__meta_kubernetes_pod_label_mlops_dev_variant"]
    assert targets["version"] == ["__meta_kubernetes_pod_label_mlops_dev_version"]


def test_a_build_without_kubernetes_sd_is_refused_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian_like = tmp_path / "prometheus"
    debian_like.write_bytes(b"\x7fELF ... prometheus/discovery/gce.(*Discovery).refresh ...")
    debian_like.chmod(0o755)
    assert not has_kubernetes_sd(debian_like)
    monkeypatch.setenv("MLOPS_PROMETHEUS_BIN", str(debian_like))
    with pytest.raises(LocalStackError, match="without kubernetes_sd_configs") as err:
        find_prometheus()
    assert "python -m mlops_localstack.prometheus build" in str(err.value)


def test_a_build_with_kubernetes_sd_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = tmp_path / "prometheus"
    upstream.write_bytes(b"\x7fELF ... prometheus/discovery/kubernetes.(*Discovery).Run ...")
    upstream.chmod(0o755)
    monkeypatch.setenv("MLOPS_PROMETHEUS_BIN", str(upstream))
    assert find_prometheus() == upstream


def test_alerts_go_to_the_alertmanager_given() -> None:
    assert "alerting" not in prometheus_config(Path("/k"))
    config = prometheus_config(Path("/k"), alertmanager_url="http://127.0.0.1:9093")
    assert config["alerting"] == {"alertmanagers": [{
        "scheme": "http", "path_prefix": "/",
        "static_configs": [{"targets": ["127.0.0.1:9093"]}]}]}
