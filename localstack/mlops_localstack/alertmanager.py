"""A real Alertmanager (Debian's ``prometheus-alertmanager``) that routes to the operator's
webhook receiver with its bearer token.

Every alert goes to one receiver, ``mlops-operator``: a webhook to the operator's
``/api/v1/alerts`` with ``Authorization: Bearer <token>`` (``http_config.authorization``,
``credentials_file`` written 0600 next to the config). Grouping by ``alertname``,
``namespace``, ``modeldeployment``; short ``group_wait``/``group_interval``/``repeat_interval``
so that the tests and the demo see a notification within seconds *and* its repeats (which must
not start a second TrainingRun). HA gossip is off (``--cluster.listen-address=``).

The local stack's Prometheus sends its alerts here with
``PrometheusServer(..., rule_files=render_rules(dir, {...}), alertmanager_url=am.url)``:
:func:`render_rules` gives it the project's rules with shorter ``for:`` durations for the demo;
:func:`prometheus_alerting` is the same ``alerting:`` section for a hand-written config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .procs import LocalStackError, LoopbackServer, ManagedProcess

#: rules/ of the source tree (this package is installed editable beside the operator)
REPO_RULES = Path(__file__).resolve().parents[2] / "rules"
RECEIVER = "mlops-operator"
GROUP_BY = ("alertname", "namespace", "modeldeployment")


def find_alertmanager() -> Path:
    """``$MLOPS_ALERTMANAGER_BIN``, else ``prometheus-alertmanager`` (Debian) or
    ``alertmanager`` on PATH."""
    explicit = os.environ.get("MLOPS_ALERTMANAGER_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise LocalStackError(f"MLOPS_ALERTMANAGER_BIN={explicit} is not executable")
        return Path(explicit)
    for name in ("prometheus-alertmanager", "alertmanager"):
        if found := shutil.which(name):
            return Path(found)
    raise LocalStackError("no Alertmanager: `apt-get install prometheus-alertmanager` (Debian), "
                          "or put an alertmanager release binary on PATH, or set "
                          "MLOPS_ALERTMANAGER_BIN")


def find_amtool() -> Path | None:
    found = shutil.which("amtool")
    return Path(found) if found else None


def alertmanager_config(
    receiver_url: str, token_file: Path, group_wait: str = "1s", group_interval: str = "2s",
    repeat_interval: str = "4s", send_resolved: bool = True,
) -> dict[str, Any]:
    """The whole ``alertmanager.yml``: everything to the operator's webhook, with the token."""
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": list(GROUP_BY),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{
            "name": RECEIVER,
            "webhook_configs": [{
                "url": receiver_url,
                "send_resolved": send_resolved,
                "max_alerts": 0,
                "http_config": {"authorization": {"type": "Bearer",
                                                  "credentials_file": str(token_file)}},
            }],
        }],
    }


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """``amtool check-config`` (what Alertmanager itself would refuse to load)."""
    amtool = find_amtool()
    if amtool is None:
        raise LocalStackError("amtool not found (Debian: it comes with prometheus-alertmanager)")
    return subprocess.run([str(amtool), "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def prometheus_alerting(alertmanager_url: str) -> dict[str, Any]:
    """The ``alerting:`` section of a ``prometheus.yml`` that sends alerts to this Alertmanager."""
    hostport = alertmanager_url.split("://", 1)[-1].rstrip("/")
    return {"alertmanagers": [{"static_configs": [{"targets": [hostport]}]}]}


def render_rules(
    dest: Path, rules_dir: Path = REPO_RULES, for_overrides: Mapping[str, str] | None = None,
) -> list[Path]:
    """Copy the project's rule files to ``dest``, optionally with shorter ``for:`` per alert
    (``{"ModelFeatureDrift": "30s"}``; ``"*"`` applies to all) for the demo; the paths."""
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for path in sorted(rules_dir.glob("*.rules.yaml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule and for_overrides:
                    new = for_overrides.get(rule["alert"], for_overrides.get("*"))
                    if new is not None:
                        rule["for"] = new
        target = dest / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(target)
    if not out:
        raise LocalStackError(f"no *.rules.yaml in {rules_dir}")
    return out


@dataclass
class AlertmanagerServer(LoopbackServer):
    """``alertmanager`` on 127.0.0.1, routing every alert to ``receiver_url`` with ``token``."""

    receiver_url: str = field(kw_only=True)
    token: str = field(kw_only=True)
    group_wait: str = field(default="1s", kw_only=True)
    group_interval: str = field(default="2s", kw_only=True)
    repeat_interval: str = field(default="4s", kw_only=True)

    @property
    def config_path(self) -> Path:
        return self.workdir / "alertmanager.yml"

    @property
    def token_path(self) -> Path:
        return self.workdir / "receiver-token"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token)
        config = alertmanager_config(self.receiver_url, self.token_path, self.group_wait,
                                     self.group_interval, self.repeat_interval)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_path

    def _start(self) -> None:
        binary = str(find_alertmanager())
        self._claim_port("Alertmanager")
        argv = [
            binary,
            f"--config.file={self.write_config()}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--cluster.listen-address=",  # no HA gossip (it would bind 0.0.0.0:9094)
            "--log.level=info",
        ]
        self.process = ManagedProcess("alertmanager", argv, self.workdir / "alertmanager.log",
                                      cwd=self.workdir).start()
        self.process.wait_until(self.ready, timeout=self.startup_timeout, what="ready (/-/ready)")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def reload(self) -> None:
        """Rewrite the config and reload it (``POST /-/reload``)."""
        self.write_config()
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def post_alerts(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """Send alerts as Prometheus does (``POST /api/v2/alerts``)."""
        httpx.post(f"{self.url}/api/v2/alerts", json=list(alerts),
                   timeout=10).raise_for_status()

    def alerts(self, active: bool = True) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (``GET /api/v2/alerts``)."""
        resp = httpx.get(f"{self.url}/api/v2/alerts", params={"active": str(active).lower()},
                         timeout=10)
        resp.raise_for_status()
        return list(resp.json())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlops_localstack.alertmanager check FILE``: amtool check-config."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m mlops_localstack.alertmanager check alertmanager.yml",
              file=sys.stderr)
        return 2
    out = check_config(Path(args[1]))
    print(out.stdout + out.stderr, end="")
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
