"""No MLflow tracking URI: the operator keeps running (a restart would not help) but is not
ready — kopf's ``/healthz``, the chart's readiness probe, answers 500 — its log says which
variable is missing, and nothing is reconciled."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops_localstack.cluster import Cluster, poll
from mlops_localstack.procs import ManagedProcess, free_port

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "iris" / "trainingrun.yaml"


@pytest.mark.parametrize("uri", [None, ""], ids=["unset", "empty"])
def test_no_mlflow_uri_is_not_ready_says_why_and_reconciles_nothing(
        cluster: Cluster, crds: Any, namespace: str, tmp_path: Path, uri: str | None) -> None:
    env = cluster.env
    env.pop("MLOPS_MLFLOW_TRACKING_URI", None)
    if uri is not None:
        env["MLOPS_MLFLOW_TRACKING_URI"] = uri  # what the chart sets without mlflow.trackingUri
    env.update(MLOPS_METRICS_PORT=str(free_port()), MLOPS_METRICS_HOST="127.0.0.1",
               MLOPS_ALERT_RECEIVER_PORT="0")
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    log = tmp_path / "operator.log"
    proc = ManagedProcess("operator", [sys.executable, "-m", "mlops_operator.cli", "run",
                                       "--liveness", healthz, f"--namespace={namespace}"],
                          log, env=env).start()
    name = ""
    try:
        def answer() -> httpx.Response | None:
            try:
                return httpx.get(healthz, timeout=5)
            except httpx.TransportError:
                return None  # kopf serves it once the startup handler has run

        proc.wait_until(lambda: answer() is not None, timeout=120, what="kopf's /healthz to answer")
        res = answer()
        assert res is not None and res.status_code == 500, (res, log.read_text()[-3000:])
        text = log.read_text()
        assert ("ERROR mlops_operator.handlers.startup: MLOPS_MLFLOW_TRACKING_URI is not set"
                in text), text[-3000:]
        # the object is seen (kopf adds the TrainingRun finalizer) but not reconciled
        doc = yaml.safe_load(EXAMPLE.read_text())
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        name = doc["metadata"]["name"]

        def tr() -> dict[str, Any]:
            return json.loads(cluster.kubectl("get", "tr", name, "-n", namespace, "-o",
                                              "json").stdout)

        poll("kopf to see the TrainingRun (its finalizer)",
             lambda: tr()["metadata"].get("finalizers"), timeout=60, interval=0.5)
        assert not tr().get("status"), tr().get("status")
        assert answer().status_code == 500
        proc.check_running()
        assert "Traceback" not in log.read_text()
    finally:
        proc.stop()
        if name:  # kopf's finalizer, which no operator removes now
            cluster.kubectl("patch", "tr", name, "-n", namespace, "--type=merge", "-p",
                            '{"metadata": {"finalizers": null}}', check=False)
