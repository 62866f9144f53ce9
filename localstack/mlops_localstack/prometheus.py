"""A real Prometheus server (Debian's ``prometheus`` package) that scrapes annotated pods.

It discovers pods through ``kubernetes_sd_configs`` (role ``pod``) against the cluster of a
kubeconfig (the local stack's admin kubeconfig: client certificate, CA), keeps the pods annotated
``prometheus.io/scrape: "true"`` and scrapes ``<pod IP>:<prometheus.io/port><prometheus.io/path>``
(the node stand-in gives each pod a loopback address of its own, reachable from this machine).
Every series carries ``namespace`` and ``pod``, and ``deployment``, ``variant``, ``version`` from
the pod labels ``mlops.dev/deployment``, ``mlops.dev/variant``, ``mlops.dev/version``.

Why a Go build like the control plane's and not Debian's package: Debian builds Prometheus
without Kubernetes service discovery (its 2.42 rejects the config: "field kubernetes_sd_configs
not found"), and the stack must discover pods as on a cluster. ``build-binaries.sh`` builds
the pinned release from the Go module proxy into the cache once (a few minutes); the web UI's
assets are not in the Go module, the HTTP API is all the stack uses.
"""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from .binaries import BUILD_SCRIPT, cache_root
from .procs import LocalStackError, LoopbackServer, ManagedProcess, http_ok

#: Series labels taken from pod labels (pod label → Prometheus label).
POD_LABELS = {
    "mlops.dev/deployment": "deployment",
    "mlops.dev/variant": "variant",
    "mlops.dev/version": "version",
}
PROMETHEUS_VERSION = os.environ.get("MLOPS_PROMETHEUS_VERSION", "v3.5.0")  # the 3.5 LTS line
#: A string only a build with Kubernetes service discovery carries (Debian's lacks it).
_K8S_SD_MARKER = b"prometheus/discovery/kubernetes."  # its package, in the symbol table


def has_kubernetes_sd(binary: Path) -> bool:
    """Whether ``binary`` was built with ``kubernetes_sd_configs`` (Debian's is not)."""
    try:
        with open(binary, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return mm.find(_K8S_SD_MARKER) != -1
    except (OSError, ValueError):
        return False


def cached_prometheus() -> Path:
    return cache_root() / "prometheus" / PROMETHEUS_VERSION / "prometheus"


def cached_promtool() -> Path:
    """promtool of the same Go build (its ``check config`` knows ``kubernetes_sd_configs``)."""
    return cached_prometheus().with_name("promtool")


def find_prometheus(allow_build: bool = True) -> Path:
    """A prometheus binary with Kubernetes service discovery.

    ``$MLOPS_PROMETHEUS_BIN``, else the cache (``<cache>/prometheus/<version>/``), else
    ``prometheus`` on PATH when it has Kubernetes SD, else a build from the Go module proxy.
    """
    looked: list[str] = []
    explicit = os.environ.get("MLOPS_PROMETHEUS_BIN")
    candidates = [Path(explicit)] if explicit else [cached_prometheus()]
    if not explicit and (on_path := shutil.which("prometheus")):
        candidates.append(Path(on_path))
    for cand in candidates:
        if not os.access(cand, os.X_OK):
            looked.append(f"{cand} (missing)")
        elif not has_kubernetes_sd(cand):
            looked.append(f"{cand} (built without kubernetes_sd_configs, like Debian's package)")
        else:
            return cand
    if allow_build and not explicit and shutil.which("go"):
        return build_prometheus()
    raise LocalStackError(
        "no prometheus with Kubernetes service discovery: looked at " + "; ".join(looked)
        + ". Debian's `apt-get install prometheus` is built without kubernetes_sd_configs; "
        "build one into the cache with `python -m mlops_localstack.prometheus build` (needs "
        "Go on PATH and the Go module proxy) or set MLOPS_PROMETHEUS_BIN"
    )


def build_prometheus() -> Path:
    """Build Prometheus from the Go module proxy into the cache (``build-binaries.sh``)."""
    env = dict(os.environ, MLOPS_PROMETHEUS_VERSION=PROMETHEUS_VERSION,
               MLOPS_CACHE_DIR=str(cache_root()))
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), "prometheus"], env=env, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not cached_prometheus().exists():
        raise LocalStackError(f"building Prometheus {PROMETHEUS_VERSION} from the Go module "
                              f"proxy failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return cached_prometheus()


def _meta_label(pod_label: str) -> str:
    """``mlops.dev/variant`` → ``__meta_kubernetes_pod_label_mlops_dev_variant``."""
    return "__meta_kubernetes_pod_label_" + "".join(
        c if c.isalnum() else "_" for c in pod_label)


def pod_scrape_config(kubeconfig: Path, job: str = "kubernetes-pods") -> dict[str, Any]:
    """The scrape job for annotated pods (``prometheus.io/scrape|port|path``)."""
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    relabel: list[dict[str, Any]] = [
        {"source_labels": [annotation + "scrape"], "regex": "true", "action": "keep"},
        {"source_labels": [annotation + "path"], "regex": "(.+)",
         "target_label": "__metrics_path__"},
        # a pod with several declared ports yields one target per port; rewritten to the same
        # address they are one target (Prometheus drops targets with identical labels)
        {"source_labels": ["__meta_kubernetes_pod_ip", annotation + "port"],
         "regex": r"(.+);(\d+)", "replacement": "$1:$2", "target_label": "__address__"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    relabel += [{"source_labels": [_meta_label(pod_label)], "target_label": target}
                for pod_label, target in POD_LABELS.items()]
    return {
        "job_name": job,
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": relabel,
    }


def prometheus_config(
    kubeconfig: Path, scrape_interval: str = "2s", rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None, static_targets: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The whole ``prometheus.yml`` (alerts go to ``alertmanager_url`` when given;
    ``static_targets`` maps a job name to ``host:port`` targets outside the cluster, such as the
    operator's own /metrics when it runs as a process)."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval},
        "scrape_configs": [pod_scrape_config(kubeconfig)] + [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in (static_targets or {}).items()],
    }
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    if alertmanager_url:
        target = urlsplit(alertmanager_url)
        config["alerting"] = {"alertmanagers": [{
            "scheme": target.scheme or "http",
            "path_prefix": target.path.rstrip("/") or "/",
            "static_configs": [{"targets": [target.netloc]}],
        }]}
    return config


@dataclass
class PrometheusServer(LoopbackServer):
    """``prometheus`` on 127.0.0.1 with its config and TSDB under ``workdir``.

    ``PrometheusServer(workdir, kubeconfig=..., scrape_interval="2s", rule_files=(),
    alertmanager_url=None)``.
    """

    kubeconfig: Path = field(kw_only=True)
    scrape_interval: str = field(default="2s", kw_only=True)
    rule_files: Sequence[Path] = field(default=(), kw_only=True)
    alertmanager_url: str | None = field(default=None, kw_only=True)
    static_targets: Mapping[str, Sequence[str]] = field(default_factory=dict, kw_only=True)

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def write_config(self) -> Path:
        config = prometheus_config(Path(self.kubeconfig).absolute(), self.scrape_interval,
                                   self.rule_files, self.alertmanager_url, self.static_targets)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_path

    def _start(self) -> None:
        binary = str(find_prometheus())
        self._claim_port("Prometheus")
        argv = [
            binary,
            f"--config.file={self.write_config()}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        self.process = ManagedProcess("prometheus", argv, self.workdir / "prometheus.log",
                                      cwd=self.workdir).start()
        self.process.wait_until(self.ready, timeout=self.startup_timeout, what="ready (/-/ready)")

    def ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")

    healthy = ready

    def reload(self) -> None:
        """Rewrite the config and ask Prometheus to reload it (``--web.enable-lifecycle``)."""
        self.write_config()
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (``/api/v1/query``)."""
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        resp.raise_for_status()
        return list(resp.json()["data"]["result"])

    def targets(self) -> dict[str, list[dict[str, Any]]]:
        """``activeTargets`` and ``droppedTargets`` from ``/api/v1/targets``."""
        resp = httpx.get(f"{self.url}/api/v1/targets", params={"state": "any"}, timeout=10)
        resp.raise_for_status()
        return dict(resp.json()["data"])


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops_localstack.prometheus build``: find or build it, print the path."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["build"]:
        print("usage: python -m mlops_localstack.prometheus build", file=sys.stderr)
        return 2
    try:
        binary = find_prometheus()
        if binary == cached_prometheus() and not cached_promtool().exists():
            build_prometheus()  # an older cache without promtool
        print(binary)
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
