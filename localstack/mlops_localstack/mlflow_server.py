"""A real MLflow tracking server (sqlite backend, local artifacts) as a child process."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .procs import Component, ManagedProcess, ensure_port_free, free_port


@dataclass
class MlflowServer(Component):
    """``mlflow server`` on 127.0.0.1 with its store and artifacts under ``workdir``."""

    workdir: Path
    port: int | None = None
    host: str = "127.0.0.1"
    startup_timeout: float = 120.0
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port:
            ensure_port_free(self.port, self.host, what="MLflow")
        else:
            self.port = free_port(self.host)
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
        self.process = ManagedProcess(
            "mlflow", argv, self.workdir / "mlflow.log", env=env, cwd=self.workdir
        ).start()
        self.process.wait_until(self.healthy, timeout=self.startup_timeout, what="healthy")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.tracking_uri}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.stop()
