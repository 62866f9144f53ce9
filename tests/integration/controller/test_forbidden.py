"""The operator's RBAC lacks a verb: the object gets ``Ready=False/Forbidden`` naming the verb and
the resource, a Warning Event, one log line per slow retry (no traceback), and the pass succeeds
once the right is granted.

The operator runs as a ServiceAccount bound to the chart's own namespaced Role and ClusterRole
(``helm template`` with ``watchNamespaces``), minus ``create`` on Jobs; the local stack's API
server authorizes with RBAC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_localstack.cluster import Cluster, poll

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlops-operator"
EXAMPLE = REPO / "examples" / "iris" / "trainingrun.yaml"
JOBS_RULE = {"apiGroups": ["batch"], "resources": ["jobs"]}


def helm() -> str:
    found = shutil.which("helm") or str(Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin/helm")
    assert Path(found).exists(), "helm not found: `make helm` (built from the Go module proxy)"
    return found


def chart_rbac(release: str, namespace: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, Role(Binding) and ClusterRole(Binding) for one namespace."""
    out = subprocess.run(
        [helm(), "template", release, str(CHART), "--namespace", namespace, "--kube-version", "1.34.4",
         "--set", f"watchNamespaces={{{namespace}}}", "--set", "crds.install=false",
         "--set", "mlflow.trackingUri=http://127.0.0.1:5000"],
        capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    return [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] in kinds]


def without_job_create(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for doc in docs:
        for rule in doc.get("rules") or [] if doc["kind"] == "Role" else []:
            if {k: rule[k] for k in JOBS_RULE} == JOBS_RULE:
                assert "create" in rule["verbs"], rule
                rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
                return docs
    raise AssertionError("the chart's Role has no Jobs rule")


def token_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig of the cluster that authenticates as the ServiceAccount (a bound token)."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    context = config["contexts"][0]
    config["users"] = [{"name": sa, "user": {"token": token}}]
    context["context"]["user"] = sa
    config["contexts"] = [context]
    config["current-context"] = context["name"]
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_missing_verb_is_a_condition_naming_it_and_a_slow_retry(
        cluster: Cluster, crds: Any, operator: Any, namespace: str, tmp_path: Path) -> None:
    release = f"rbac-{namespace[-5:]}"
    docs = without_job_create(chart_rbac(release, namespace))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cluster_scoped = [(d["kind"].lower(), d["metadata"]["name"]) for d in docs
                      if d["kind"].startswith("Cluster")]
    try:
        [sa] = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
        kubeconfig = token_kubeconfig(cluster, namespace, sa, tmp_path / "sa.kubeconfig")
        operator.restart(KUBECONFIG=str(kubeconfig), MLOPS_FORBIDDEN_RETRY_SECONDS="2")
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["spec"].pop("register", None)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        name = doc["metadata"]["name"]

        def tr() -> dict[str, Any]:
            return json.loads(cluster.kubectl("get", "tr", name, "-n", namespace,
                                              "-o", "json").stdout)

        def ready() -> dict[str, Any]:
            return next((c for c in (tr().get("status") or {}).get("conditions") or []
                         if c["type"] == "Ready"), {})

        cond = poll("Ready=False/Forbidden", lambda: ready().get("reason") == "Forbidden" and ready(),
                    timeout=120, interval=0.5)
        user = f"system:serviceaccount:{namespace}:{sa}"
        assert cond["status"] == "False", cond
        message = cond["message"]
        assert "may not create jobs.batch in namespace " + namespace in message, message
        assert f'User "{user}" cannot create resource "jobs"' in message, message
        events = json.loads(cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector",
            f"involvedObject.name={name},reason=Forbidden", "-o", "json").stdout)["items"]
        assert [e["type"] for e in events] == ["Warning"], events
        assert "create jobs.batch" in events[0]["message"]
        # retried (every 2 s here; 60 s by default), one line each, no traceback
        poll("a second refused pass", lambda: operator.logs().count(
            f"TrainingRun {namespace}/{name}: the operator may not create") >= 2,
             timeout=60, interval=0.5)
        logs = operator.logs()
        assert "Traceback" not in logs, logs[-3000:]
        # the right granted: the next pass creates the Job, the condition moves on
        role = json.loads(cluster.kubectl("get", "role", f"{release}-mlops-operator", "-n",
                                          namespace, "-o", "json").stdout)
        for rule in role["rules"]:
            if {k: rule[k] for k in JOBS_RULE} == JOBS_RULE:
                rule["verbs"].append("create")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
        # status.jobName is recorded before the create, so it says nothing here: wait for the
        # Job itself, then for the pass that created it to move the condition on
        poll("the Job created after the grant", lambda: json.loads(cluster.kubectl(
            "get", "jobs", "-n", namespace, "-o", "json").stdout)["items"], timeout=60,
             interval=0.5)
        poll("Ready no longer Forbidden", lambda: ready().get("reason") != "Forbidden",
             timeout=30, interval=0.5)
        assert (tr().get("status") or {}).get("jobName") == f"{name}-train"
        events = json.loads(cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector",
            f"involvedObject.name={name},reason=Forbidden", "-o", "json").stdout)["items"]
        assert len(events) == 1, ([(e["eventTime"], e["message"]) for e in events],
                                  operator.logs()[-6000:])
    finally:
        operator.stop()
        for kind, obj in cluster_scoped:
            cluster.kubectl("delete", kind, obj, "--ignore-not-found", check=False)
