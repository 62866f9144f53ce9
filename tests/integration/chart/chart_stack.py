"""Helpers of the chart tests (fixtures in conftest.py). The chart installed like users install it: a control plane of its own (with an audit log, so
the RBAC test can read what the operator did), a node stand-in, MLflow, and helm.

The chart's tests do not share the session's cluster: a cluster-wide operator installed by helm
would reconcile the other tests' objects, and the chart's CRDs must be helm's to install.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops_localstack.cluster import Cluster, poll

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlops-operator"
EXAMPLES = REPO / "examples" / "iris"
#: the field manager Argo CD applies with (server-side apply)
GITOPS_MANAGER = "argocd-controller"
RELEASE = "mlops"
RELEASE_NS = "mlops-system"

#: Every request of a service account, with its verb and object, at Metadata level.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def helm_binary() -> str:
    helm = shutil.which("helm") or str(Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin/helm")
    assert Path(helm).exists(), "helm not found: `make helm` (built from the Go module proxy)"
    return helm


@dataclass
class ChartStack:
    """What the chart tests get: the cluster, its audit log, the node, MLflow."""

    cluster: Cluster
    audit_log: Path
    node: Any
    tracking_uri: str
    workdir: Path
    #: when the current release was installed (RFC 3339, for the audit log)
    installed_at: str = ""

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([helm_binary(), *args], env=self.cluster.env, capture_output=True,
                             text=True, timeout=timeout, check=False)
        if check:
            assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    def values(self, **extra: Any) -> list[str]:
        """`--set` arguments for this stack (MLflow, fast resync) plus ``extra``. The node stand-in
        runs the image's entrypoint (``mlops-operator run``) from the project's environment; the
        operator logs in with the kubernetes client, which reads the ``tokenFile`` of the
        kubeconfig the stand-in hands the pod for its ServiceAccount."""
        sets = {"mlflow.trackingUri": self.tracking_uri, "resyncSeconds": "3", **extra}
        args: list[str] = []
        for key, value in sets.items():
            args += ["--set-json" if not isinstance(value, str) else "--set",
                     f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return args

    def install(self, *args: str, wait_ready: bool = True, chart: Path = CHART) -> str:
        # the previous release's pods are gone first: their last requests (a peering goodbye)
        # must not count as this release's in the audit log
        poll("no operator pod left from an earlier release", lambda: not self.operator_pods(),
             timeout=120, interval=0.5)
        self.installed_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        out = self.helm("install", RELEASE, str(chart), "--namespace", RELEASE_NS,
                        "--create-namespace", *args)
        if wait_ready:
            self.wait_operator_ready()
        return out.stdout

    def uninstall(self) -> str:
        return self.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait").stdout

    def release_exists(self) -> bool:
        out = self.helm("status", RELEASE, "--namespace", RELEASE_NS, check=False)
        return out.returncode == 0

    def operator_pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "pods", "-n", RELEASE_NS, "-l",
                                   f"app.kubernetes.io/instance={RELEASE}", "-o", "json")
        return [p for p in json.loads(out.stdout)["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.operator_pods() if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or [])]

    def wait_operator_ready(self, replicas: int = 1, timeout: float = 240) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            pods = self.ready_pods()
            return pods if len(pods) >= replicas else None

        try:
            return poll(f"{replicas} ready operator pod(s)", ready, timeout=timeout, interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.operator_logs()}") from None

    def operator_logs(self, tail: int = 60) -> str:
        parts = []
        for pod in self.operator_pods():
            name = pod["metadata"]["name"]
            try:
                parts.append(f"--- {name}\n{self.node.logs(RELEASE_NS, name, tail=tail)}")
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                parts.append(f"--- {name}: no logs ({exc})")
        return "\n".join(parts)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        self.cluster.kubectl("create", "namespace", name)
        return name

    def audit_events(self, user: str, since: str = "") -> list[dict[str, Any]]:
        """The audit events of ``user`` (received at or after the RFC 3339 time ``since``)."""
        events = []
        with self.audit_log.open() as f:
            for line in f:
                ev = json.loads(line)
                if (ev.get("user", {}).get("username") == user
                        and ev.get("requestReceivedTimestamp", "") >= since):
                    events.append(ev)
        return events


def audited_control_plane(workdir: Path):  # noqa: ANN202
    from mlops_localstack.controlplane import ControlPlane

    class AuditedControlPlane(ControlPlane):
        """The local control plane with the API server's audit log on."""

        def _launch(self, name: str, argv: list[str]):  # noqa: ANN202
            if name == "kube-apiserver":
                policy = self.workdir / "audit-policy.yaml"
                policy.write_text(yaml.safe_dump(AUDIT_POLICY))
                argv = [*argv, f"--audit-policy-file={policy}",
                        f"--audit-log-path={self.workdir / 'audit.log'}",
                        "--audit-log-mode=blocking"]
            return super()._launch(name, argv)

    return AuditedControlPlane(workdir)


def kube_json(stack: ChartStack, *args: str) -> dict[str, Any] | None:
    out = stack.cluster.kubectl(*args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def gitops_apply(stack: ChartStack, path: Path, namespace: str) -> str:
    return stack.cluster.kubectl("apply", "--server-side", f"--field-manager={GITOPS_MANAGER}",
                                 "-n", namespace, "-f", str(path)).stdout


def exercised_rights(stack: ChartStack, user: str, since: str = "",
                     namespaced: bool | None = None) -> dict[tuple[str, str, str], int]:
    """(apiGroup, resource[/subresource], verb) → HTTP status seen, from the audit log. A
    server-side apply that created its object (201) needs `create` as well as `patch`.
    ``namespaced``: only requests inside a namespace (True) or cluster-scoped ones (False)."""
    rights: dict[tuple[str, str, str], int] = {}
    for ev in stack.audit_events(user, since):
        ref = ev.get("objectRef")
        if not ref or not ref.get("resource"):
            continue  # discovery (/api, /apis): allowed to every authenticated user
        if namespaced is not None and bool(ref.get("namespace")) != namespaced:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        code = (ev.get("responseStatus") or {}).get("code", 0)
        verbs = [ev["verb"]] + (["create"] if ev["verb"] == "patch" and code == 201 else [])
        for verb in verbs:
            key = (ref.get("apiGroup") or "", resource, verb)
            rights[key] = code if code == 403 else max(rights.get(key, 0), code)
    return rights


def granted_rights(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", [])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def can_i_matrix(stack: ChartStack, user: str, default_ns: str,
                 cases: list[tuple[str, str, str | None, str]]) -> list[tuple[str, str, str, str]]:
    rows = []
    for verb, resource, ns, _ in cases:
        where = default_ns if ns is None else ns
        args = ["auth", "can-i", verb, resource, f"--as={user}"]
        args += ["-n", where] if where else []
        out = stack.cluster.kubectl(*args, check=False)
        rows.append((verb, resource, where or "(cluster)", out.stdout.strip()))
    print("\n".join(f"{a:12} {b:50} {c:22} {d}" for a, b, c, d in rows))
    return rows
