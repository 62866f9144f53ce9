"""A real MLflow tracking server (sqlite backend, local artifacts) as a child process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .procs import LoopbackServer, ManagedProcess, http_ok


@dataclass
class MlflowServer(LoopbackServer):
    """``mlflow server`` on 127.0.0.1 with its store and artifacts under ``workdir``."""

    startup_timeout: float = 120.0

    @property
    def tracking_uri(self) -> str:
        return self.url

    def _start(self) -> None:
        self._claim_port("MLflow")
        mlflow_bin = Path(sys.prefix) / "bin" / "mlflow"
        argv = [
            str(mlflow_bin) if mlflow_bin.exists() else "mlflow",
            "server",
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination", str(self.workdir / "artifacts"),
            "--serve-artifacts",
            "--host", self.host,
            "--port", str(self.port),
            "--workers", "1",
        ]
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        env.setdefault("MLFLOW_SERVER_ALLOWED_HOSTS", "*")
        # MLflow 3's server otherwise starts a job runner and three huey consumers (15 worker
        # threads) for GenAI jobs nothing here uses: four more Python processes per server
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.process = ManagedProcess(
            "mlflow", argv, self.workdir / "mlflow.log", env=env, cwd=self.workdir
        ).start()
        self.process.wait_until(self.healthy, timeout=self.startup_timeout, what="healthy")

    def healthy(self) -> bool:
        return http_ok(f"{self.tracking_uri}/health")
