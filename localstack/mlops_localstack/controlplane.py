"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Like controller-runtime's envtest, but with the controller manager too (Jobs, Deployments,
EndpointSlices and garbage collection behave as on a real cluster) and RBAC on. Clients
authenticate with certificates: an admin in ``system:masters`` and the controller manager as
``system:kube-controller-manager`` (with per-controller service-account credentials).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from . import procs
from .binaries import Binaries, ensure_binaries
from .certs import make_pki
from .procs import Component, LocalStackError, ManagedProcess, ensure_port_free, free_port

log = logging.getLogger(__name__)

#: Service ClusterIPs are only allocated here, never routed to (no kube-proxy: the router reaches
#: pods by their loopback IPs); /16 leaves room for 1,000 ModelDeployments of 4 Services each.
SERVICE_CIDR = "10.0.0.0/16"


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path, key: Path, user: str, context: str = "mlops-local"
) -> Path:
    """Write a kubeconfig with embedded credentials (so it can be copied anywhere)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": context, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": user, "namespace": "default"}}
        ],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane(Component):
    """etcd + kube-apiserver (+ kube-controller-manager) as child processes on 127.0.0.1."""

    workdir: Path
    binaries: Binaries | None = None
    apiserver_port: int | None = None
    etcd_port: int | None = None
    controller_manager: bool = True
    startup_timeout: float = 90.0
    processes: list[ManagedProcess] = field(default_factory=list, init=False)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def _client(self) -> httpx.Client:
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return httpx.Client(base_url=self.server, verify=ctx, timeout=5.0)

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        self.binaries = self.binaries or ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = make_pki(self.workdir / "pki")
        if self.etcd_port:
            ensure_port_free(self.etcd_port, what="etcd")
        else:
            self.etcd_port = free_port()
        if self.apiserver_port:
            ensure_port_free(self.apiserver_port, what="kube-apiserver")
        else:
            self.apiserver_port = free_port()
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url, pki)
        write_kubeconfig(
            self.kubeconfig, self.server, pki["ca.crt"], pki["admin.crt"], pki["admin.key"],
            "mlops-local-admin",
        )
        if self.controller_manager:
            self._start_controller_manager(pki)

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> str:
        """Start etcd and wait until healthy; return its client URL."""
        assert self.binaries is not None
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        etcd = self._launch("etcd", [
            str(self.binaries.etcd),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])
        etcd.wait_until(
            lambda: httpx.get(f"{etcd_url}/health", timeout=2).json().get("health") == "true",
            timeout=self.startup_timeout,
        )
        return etcd_url

    def _start_apiserver(self, etcd_url: str, pki: dict[str, Path]) -> None:
        assert self.binaries is not None
        apiserver = self._launch("kube-apiserver", [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki['apiserver.crt']}",
            f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            f"--requestheader-client-ca-file={pki['ca.crt']}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
        ])
        with self._client() as client:
            apiserver.wait_until(
                lambda: client.get("/readyz").status_code == 200,
                timeout=self.startup_timeout,
                what="ready (/readyz)",
            )

    def _start_controller_manager(self, pki: dict[str, Path]) -> None:
        assert self.binaries is not None
        kcm_kubeconfig = write_kubeconfig(
            self.workdir / "kcm.kubeconfig", self.server, pki["ca.crt"], pki["kcm.crt"],
            pki["kcm.key"], "system:kube-controller-manager",
        )
        kcm_port = free_port()
        kcm = self._launch("kube-controller-manager", [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki['sa.key']}",
            f"--root-ca-file={pki['ca.crt']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller"
            ",-persistentvolume-binder,-attachdetach,-persistentvolume-expander",
            "--profiling=false",
        ])
        kcm.wait_until(
            lambda: procs.http_ok(f"https://127.0.0.1:{kcm_port}/healthz", verify=False),
            timeout=self.startup_timeout,
            what="healthy (/healthz)",
        )
        # the service-account controller runs: namespaces get their default ServiceAccount
        with self._client() as client:
            kcm.wait_until(
                lambda: client.get("/api/v1/namespaces/default/serviceaccounts/default").status_code
                == 200,
                timeout=self.startup_timeout,
                what="serving (default ServiceAccount created)",
            )

    def check(self) -> None:
        """Raise when a component has died."""
        for proc in self.processes:
            proc.check_running()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log.warning("stopping %s failed: %s", proc.name, exc)
        self.processes.clear()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._client() as client:
            while time.monotonic() < deadline:
                self.check()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        raise LocalStackError("kube-apiserver not ready")

    def process(self, name: str) -> ManagedProcess:
        """The child process ``etcd``, ``kube-apiserver`` or ``kube-controller-manager``."""
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise LocalStackError(f"no {name} in this control plane "
                              f"({', '.join(p.name for p in self.processes)})")

    def restart(self, name: str, down_for: float = 0.0, kill: bool = True) -> float:
        """Restart one component in place (``kill``: SIGKILL, as a crash; else SIGTERM), keeping
        its ports, certificates and data (etcd's data directory survives); stay down
        ``down_for`` seconds. Returns the seconds from the start until the apiserver is ready
        again (``/readyz``, which includes its etcd check)."""
        proc = self.process(name)
        if kill:
            proc.kill()
        else:
            proc.stop()
        time.sleep(down_for)
        began = time.monotonic()
        proc.start()
        self.wait_ready(timeout=self.startup_timeout)
        return time.monotonic() - began
