"""`helm install` onto the local stack for real: the operator runs as a pod under its own
ServiceAccount and reconciles the examples end to end; GitOps sees no drift; upgrade and
uninstall behave.

One release (``mlops`` in ``mlops-system``, cluster-wide) per module; the examples are applied
once (``examples``) the way Argo CD applies them: server-side apply, field manager
``argocd-controller``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd_health import health
from chart_stack import (
    CHART,
    EXAMPLES,
    GITOPS_MANAGER,
    RELEASE,
    RELEASE_NS,
    ChartStack,
    can_i_matrix,
    exercised_rights,
    gitops_apply,
    granted_rights,
    kube_json,
)

from mlops_localstack.cluster import poll
from mlops_localstack.gateway_api import ensure_gateway_api_crds
from mlops_operator.builders.traffic import GRPC_PARENT_REFS_ANNOTATION, PARENT_REFS_ANNOTATION

pytestmark = [pytest.mark.integration, pytest.mark.install]

KINDS = {"TrainingRun": "trainingruns.mlops.dev", "ModelVersion": "modelversions.mlops.dev",
         "ModelDeployment": "modeldeployments.mlops.dev"}
#: Where each example can get on the local stack (no second model version exists there, so the
#: holdout example waits for version 2, and the manual one's run id is a placeholder). Examples
#: not named here only need to be observed at their generation.
FINAL = {
    "iris-train-1": {"Succeeded"},
    "iris-v1": {"Promoted"},
    "iris-rollback-to-v1": {"Promoted"},
    "iris-v2": {"Failed", "Rejected", "Pending", "Validating"},
    "iris-manual": {"Failed"},
    "modeldeployment.yaml": {"Ready"},
}


def placement(docs: list[tuple[Path, dict[str, Any]]], train: str,
              others: list[str]) -> dict[str, str]:
    """Example file → namespace, so that no two examples share a kind and name in one namespace
    (examples are alternatives: both ModelDeployments are named `iris`) and no ModelVersion
    example shares the TrainingRun's namespace (the TrainingRun registers `iris-v1`)."""
    taken: dict[str, set[tuple[str, str]]] = {train: {("ModelVersion", "iris-v1")}}
    where: dict[str, str] = {}
    for path, doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        for ns in [train, *others]:
            if key not in taken.setdefault(ns, set()):
                taken[ns].add(key)
                where[path.name] = ns
                break
        else:
            raise AssertionError(f"not enough namespaces for {path.name}")
    return where


def example_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(EXAMPLES.glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


def get(stack: ChartStack, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = kube_json(stack, "get", KINDS[kind], name, "-n", namespace)
    assert obj is not None, f"{kind} {name} not found"
    return obj


def phase(stack: ChartStack, kind: str, name: str, namespace: str) -> str | None:
    return (get(stack, kind, name, namespace).get("status") or {}).get("phase")


@pytest.fixture(scope="module")
def release(chart_stack: ChartStack) -> Iterator[str]:
    """The chart installed cluster-wide; the `helm install` output."""
    if chart_stack.release_exists():
        chart_stack.uninstall()
    out = chart_stack.install(*chart_stack.values())
    try:
        yield out
    finally:
        if chart_stack.release_exists():
            chart_stack.uninstall()


@pytest.fixture(scope="module")
def examples(chart_stack: ChartStack, release: str) -> Iterator[dict[str, str]]:
    """Every example applied as Argo CD would, reconciled as far as the local stack allows;
    example file → namespace.

    The TrainingRun registers its version as ModelVersion ``iris-v1``, the name that
    examples/iris/modelversion.yaml has too: they are two ways to get version 1 validated, not
    one GitOps app, so the ModelVersion examples go into a namespace of their own (the MLflow
    registry is the same for both).
    """
    stack = chart_stack
    docs = example_docs()
    train = stack.namespace("iris")
    others = [stack.namespace(f"iris-{i}") for i in range(len(docs))]
    by_file = placement(docs, train, others)
    for ns in others:
        if ns not in by_file.values():
            stack.cluster.kubectl("delete", "namespace", ns, "--wait=false")
    where = by_file

    def wait_phase(kind: str, name: str, ns: str, want: set[str], timeout: float = 600) -> str:
        try:
            return poll(f"{kind} {name} in {sorted(want)}",
                        lambda: (p := phase(stack, kind, name, ns)) in want and p,
                        timeout=timeout, interval=2)
        except AssertionError as exc:
            status = json.dumps(get(stack, kind, name, ns).get("status"))
            raise AssertionError(f"{exc}\nstatus: {status}\n{stack.operator_logs()}") from None

    # 1. train: TrainingRun → MLflow run → ModelVersion → alias champion
    gitops_apply(stack, EXAMPLES / "trainingrun.yaml", train)
    wait_phase("TrainingRun", "iris-train-1", train, {"Succeeded"})
    mv = poll("the TrainingRun's ModelVersion",
              lambda: (get(stack, "TrainingRun", "iris-train-1", train)["status"].get("modelVersion")
                       or {}).get("name"), timeout=60)
    wait_phase("ModelVersion", mv, train, {"Promoted"})
    # 2. the example ModelDeployment serves champion and challenger; only one version exists
    # here, so the challenger alias points at it too (a user would promote a second version)
    from mlflow.tracking import MlflowClient

    MlflowClient(stack.tracking_uri).set_registered_model_alias("iris", "challenger", "1")
    # 3. every other example
    for path, _doc in docs:
        if path.name != "trainingrun.yaml":
            gitops_apply(stack, path, where[path.name])
    for path, doc in docs:
        name = doc["metadata"]["name"]
        want = FINAL.get(path.name) or FINAL.get(name)
        if want:
            wait_phase(doc["kind"], name, where[path.name], want)

    def behind() -> dict[str, Any]:
        out = {}
        for path, doc in docs:
            name = doc["metadata"]["name"]
            obj = get(stack, doc["kind"], name, where[path.name])
            status = obj.get("status") or {}
            # a ModelVersion waiting for its version (VersionNotFound) records the generation
            # only in its conditions (reported to the lead): accept either
            seen = {status.get("observedGeneration")} | {
                c.get("observedGeneration") for c in status.get("conditions") or []
                if c.get("type") == "Ready"}
            if obj["metadata"]["generation"] not in seen:
                out[path.name] = status
        return out

    try:
        poll("every example observed at its generation", lambda: not behind(), timeout=120,
             interval=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(behind())}") from None
    yield where


def test_helm_install_runs_the_operator_as_a_pod_under_its_service_account(
        chart_stack: ChartStack, release: str) -> None:
    print(release)
    assert "STATUS: deployed" in release and "Next steps" in release
    [pod] = chart_stack.ready_pods()
    sa = f"{RELEASE}-mlops-operator"
    assert pod["spec"]["serviceAccountName"] == sa
    assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
    # the node stand-in ran the image's entrypoint (mlops-operator run) as that ServiceAccount
    logs = chart_stack.node.logs(RELEASE_NS, pod["metadata"]["name"])
    assert "mlops-operator configured" in logs, logs[-3000:]
    user = f"system:serviceaccount:{RELEASE_NS}:{sa}"
    poll(f"{user} to watch TrainingRuns (audit log)",
         lambda: any(e.get("objectRef", {}).get("resource") == "trainingruns"
                     and e["verb"] == "watch" and e.get("responseStatus", {}).get("code") == 200
                     for e in chart_stack.audit_events(user)), timeout=60, interval=1)


def test_the_examples_loop_end_to_end(chart_stack: ChartStack, examples: dict[str, str]) -> None:
    """TrainingRun → ModelVersion (Promoted) → ModelDeployment (Ready), with Argo CD health."""
    ns = examples["trainingrun.yaml"]
    tr = get(chart_stack, "TrainingRun", "iris-train-1", ns)
    assert tr["status"]["phase"] == "Succeeded" and tr["status"]["mlflowRunId"]
    assert health(tr)[0] == "Healthy"
    mv = get(chart_stack, "ModelVersion", tr["status"]["modelVersion"]["name"], ns)
    assert mv["status"]["phase"] == "Promoted"
    md = get(chart_stack, "ModelDeployment", "iris", examples["modeldeployment.yaml"])
    assert md["status"]["phase"] == "Ready", md["status"]
    assert health(md)[0] == "Healthy"
    versions = {v["name"]: str(v.get("version")) for v in md["status"]["variants"]}
    assert versions == {"champion": "1", "challenger": "1"}
    # the serving pods run under the operator-made router/serving objects, owned by the MD
    md_ns = examples["modeldeployment.yaml"]

    def serving() -> list[dict[str, Any]]:
        deps = kube_json(chart_stack, "get", "deployments", "-n", md_ns,
                         "-l", "app.kubernetes.io/managed-by=mlops-operator") or {"items": []}
        return [d for d in deps["items"] if d["metadata"]["ownerReferences"][0]["uid"]
                == md["metadata"]["uid"]]

    assert serving() and all(d["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
                             for d in serving())
    poll("the ModelDeployment's Deployments ready", lambda: all(
        d["status"].get("readyReplicas") == d["spec"]["replicas"] for d in serving()),
         timeout=120, interval=1)
    manual = get(chart_stack, "ModelVersion", "iris-manual", examples["modelversion-manual.yaml"])
    assert health(manual)[0] == "Degraded"
    assert health(get(chart_stack, "ModelVersion", "iris-v1", examples["modelversion.yaml"]))[0] == "Healthy"


def test_gitops_sees_no_drift(chart_stack: ChartStack, examples: dict[str, str]) -> None:
    """What Argo CD would compare: `kubectl diff --server-side` of every example is empty, and
    re-applying changes nothing (the operator writes only status and its own children)."""
    before = {}
    for path, doc in example_docs():
        ns = examples[path.name]
        obj = kube_json(chart_stack, "get", KINDS[doc["kind"]], doc["metadata"]["name"], "-n", ns,
                        "--show-managed-fields")
        assert obj is not None
        before[path.name] = (obj["metadata"]["generation"],
                                           obj["metadata"]["resourceVersion"])
        managers = {f["manager"]: f for f in obj["metadata"]["managedFields"]}
        # the operator only ever writes status (and kopf its finalizer/annotations) on them
        for name, entry in managers.items():
            if name != GITOPS_MANAGER:
                fields = json.dumps(entry.get("fieldsV1", {}))
                assert '"f:spec"' not in fields, f"{name} wrote spec of {doc['metadata']['name']}"
    diffs = []
    for path, _doc in example_docs():
        ns = examples[path.name]
        out = chart_stack.cluster.kubectl(
            "diff", "--server-side", f"--field-manager={GITOPS_MANAGER}", "-n", ns,
            "-f", str(path), check=False)
        diffs.append(path.name)
        assert out.returncode == 0 and out.stdout == "", f"{path.name} drifted:\n{out.stdout}{out.stderr}"
    assert len(diffs) == len(example_docs())
    for path, _doc in example_docs():
        out = gitops_apply(chart_stack, path, examples[path.name])
        assert re.search(r"serverside-applied", out), out
    for path, doc in example_docs():
        obj = get(chart_stack, doc["kind"], doc["metadata"]["name"], examples[path.name])
        assert obj["metadata"]["generation"] == before[path.name][0]


def test_helm_upgrade_changes_a_value_and_a_crd_field(chart_stack: ChartStack, release: str,
                                                      tmp_path: Path) -> None:
    old = {p["metadata"]["uid"] for p in chart_stack.ready_pods()}
    chart = tmp_path / "mlops-operator"
    shutil.copytree(CHART, chart, symlinks=False)  # resolves files/crds -> crds/
    crd_file = chart / "files" / "crds" / "trainingruns.mlops.dev.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    version = crd["spec"]["versions"][0]
    version["additionalPrinterColumns"].append(
        {"name": "Upgraded", "type": "string", "jsonPath": ".metadata.labels.upgraded"})
    crd_file.write_text(yaml.safe_dump(crd))
    chart_stack.helm("upgrade", RELEASE, str(chart), "--namespace", RELEASE_NS,
                     *chart_stack.values(resyncSeconds="4"))
    live = kube_json(chart_stack, "get", "crd", "trainingruns.mlops.dev")
    assert live is not None
    cols = [c["name"] for c in live["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Upgraded" in cols
    [pod] = poll("the upgraded operator pod",
                 lambda: [p for p in chart_stack.ready_pods() if p["metadata"]["uid"] not in old],
                 timeout=240, interval=1)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MLOPS_RESYNC_SECONDS"] == "4"
    # back to the chart as shipped (the CRD column goes away again)
    chart_stack.helm("upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NS,
                     *chart_stack.values())
    live = kube_json(chart_stack, "get", "crd", "trainingruns.mlops.dev")
    assert "Upgraded" not in [c["name"] for c in live["spec"]["versions"][0]["additionalPrinterColumns"]]
    chart_stack.wait_operator_ready()


# -- RBAC: what the operator exercised (audit log) against what the chart grants ----------------

#: Rights in the chart for recovery paths that a run takes only when a crash or a race puts it
#: there; the test lets them go unused (anything else granted must be exercised).
RECOVERY_ONLY = {
    ("mlops.dev", "modelversions", "get"): "create_or_get reads an existing ModelVersion back "
    "after a 409 (a TrainingRun pass retried after a crash)",
    ("batch", "jobs", "get"): "a pass reads the Job its status names only when the Job watch "
    "has not delivered it yet (after a restart); otherwise the Job comes from the watch",
}


def test_rbac_is_exactly_what_the_operator_exercises(chart_stack: ChartStack,
                                                     examples: dict[str, str]) -> None:
    """Cluster-wide mode: the ClusterRole holds what the audit log shows the operator doing
    (plus what it delegates to the router's Role), nothing missing, nothing unused."""
    stack = chart_stack
    # the router's Role (made by the operator): RBAC lets it grant only what it holds itself
    routers = json.loads(stack.cluster.kubectl(
        "get", "roles", "-A", "-l", "app.kubernetes.io/managed-by=mlops-operator",
        "-o", "json").stdout)["items"]
    delegated = set().union(*(granted_rights(r["rules"]) for r in routers)) if routers else set()
    assert delegated, "no router Role seen: the ModelDeployment example did not get that far"
    # pruning: the example ModelDeployment drops its challenger and its builtin router, so the
    # operator deletes that variant's Deployment and the router's objects
    md_ns = examples["modeldeployment.yaml"]
    router = poll("the router Deployment", lambda: [d["metadata"]["name"] for d in json.loads(
        stack.cluster.kubectl("get", "deployments", "-n", md_ns, "-o", "json").stdout)["items"]
        if "router" in d["metadata"]["name"]], timeout=60)[0]

    def names(kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in json.loads(stack.cluster.kubectl(
            "get", kind, "-n", md_ns, "-o", "json").stdout)["items"]}

    # Gateway API mode and autoscaling: the operator applies an HTTPRoute, a GRPCRoute and an
    # HPA per variant
    stack.cluster.apply_crds(ensure_gateway_api_crds())
    stack.cluster.kubectl("annotate", "md", "iris", "-n", md_ns,
                          f"{PARENT_REFS_ANNOTATION}=infra/public:http",
                          f"{GRPC_PARENT_REFS_ANNOTATION}=infra/public:grpc")
    stack.cluster.kubectl("patch", "md", "iris", "-n", md_ns, "--type=merge", "-p", json.dumps({
        "spec": {"traffic": {"router": "gateway-api"},
                 "runtime": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                                             "targetCPUUtilizationPercentage": 80}}}}))
    poll("the routes and the HPAs", lambda: names("httproutes.gateway.networking.k8s.io")
         == names("grpcroutes.gateway.networking.k8s.io") == {"iris"}
         and names("hpa") == {"iris-champion", "iris-challenger"}, timeout=180, interval=1)
    stack.cluster.kubectl("patch", "md", "iris", "-n", md_ns, "--type=json", "-p", json.dumps([
        {"op": "remove", "path": "/spec/variants/1"},
        {"op": "replace", "path": "/spec/variants/0/weight", "value": 100},
        {"op": "replace", "path": "/spec/traffic/router", "value": "service"},
        {"op": "remove", "path": "/spec/runtime/autoscaling"}]))
    poll("the router, the challenger, the routes and the HPAs to be pruned", lambda: not (
        names("deployments") & {router, "iris-challenger"}
        or names("httproutes.gateway.networking.k8s.io")
        or names("grpcroutes.gateway.networking.k8s.io") or names("hpa")),
         timeout=180, interval=1)
    # a Job whose pods are refused (a quota of no pods): the operator reads the Job's
    # FailedCreate Event (list events) and shows the apiserver's words on the TrainingRun
    quota_ns = stack.namespace("quota")
    stack.cluster.kubectl("apply", "-n", quota_ns, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}}}))
    gitops_apply(stack, EXAMPLES / "trainingrun.yaml", quota_ns)

    def refused() -> dict[str, Any] | None:
        conditions = (get(stack, "TrainingRun", "iris-train-1", quota_ns).get("status")
                      or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"
                     and c["reason"] == "FailedCreate"), None)

    cond = poll("FailedCreate on the TrainingRun", refused, timeout=120, interval=1)
    assert "exceeded quota" in cond["message"], cond
    # finish the run: delete every example (the TrainingRun's Job, finalizers, pruning)
    stack.cluster.kubectl("delete", "tr", "iris-train-1", "-n", quota_ns, "--wait=false")
    for path, doc in example_docs():
        stack.cluster.kubectl("delete", KINDS[doc["kind"]], doc["metadata"]["name"], "-n",
                              examples[path.name], "--wait=false")
    remaining = {}
    for ns in {*examples.values(), quota_ns}:
        remaining[ns] = poll(f"the examples in {ns} to be gone", lambda ns=ns: not json.loads(
            stack.cluster.kubectl("get", "mlops", "-n", ns, "-o", "json").stdout)["items"],
            timeout=180, interval=1)
    user = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}-mlops-operator"
    rights = exercised_rights(stack, user, since=stack.installed_at)  # this release only
    forbidden = sorted(k for k, code in rights.items() if code == 403)
    assert not forbidden, f"the operator was refused: {forbidden}"
    needed = set(rights) | delegated
    role = json.loads(stack.cluster.kubectl("get", "clusterrole", f"{RELEASE}-mlops-operator",
                                            "-o", "json").stdout)
    granted = granted_rights(role["rules"])
    print("exercised:", *sorted(rights), sep="\n  ")
    print("delegated only:", *sorted(delegated - set(rights)), sep="\n  ")
    assert not needed - granted, f"missing from the chart: {sorted(needed - granted)}"
    assert set(RECOVERY_ONLY) <= granted, sorted(set(RECOVERY_ONLY) - granted)
    assert not granted - needed - set(RECOVERY_ONLY), (
        f"granted but unused: {sorted(granted - needed - set(RECOVERY_ONLY))}")


CAN_I = [
    # (verb, resource, namespace or None = the examples' namespace, expected)
    ("create", "jobs.batch", None, "yes"),
    ("patch", "trainingruns.mlops.dev/status", None, "yes"),
    ("patch", "deployments.apps", None, "yes"),
    ("create", "roles.rbac.authorization.k8s.io", None, "yes"),
    ("watch", "modeldeployments.mlops.dev", "default", "yes"),
    ("get", "secrets", None, "no"),
    ("get", "secrets", RELEASE_NS, "no"),
    ("list", "secrets", "kube-system", "no"),
    ("list", "nodes", "", "no"),
    ("delete", "namespaces", "", "no"),
    ("update", "modeldeployments.mlops.dev", None, "no"),
    ("list", "certificates.cert-manager.io", None, "no"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", "no"),
    ("escalate", "roles.rbac.authorization.k8s.io", None, "no"),
    ("bind", "clusterroles.rbac.authorization.k8s.io", "", "no"),
    ("create", "pods/exec", None, "no"),
    ("impersonate", "serviceaccounts", None, "no"),
]


def test_can_i_matrix_cluster_wide(chart_stack: ChartStack, release: str) -> None:
    ns = chart_stack.namespace("can-i")
    user = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}-mlops-operator"
    rows = can_i_matrix(chart_stack, user, ns, CAN_I)
    assert [r[3] for r in rows] == [c[3] for c in CAN_I], rows


def test_helm_uninstall_keeps_the_crds_and_the_users_objects(chart_stack: ChartStack,
                                                             release: str) -> None:
    stack = chart_stack
    ns = stack.namespace("keep")
    gitops_apply(stack, EXAMPLES / "modelversion-manual.yaml", ns)
    out = stack.uninstall()
    assert "uninstalled" in out and "kept due to the resource policy" in out, out
    for crd in KINDS.values():
        assert kube_json(stack, "get", "crd", crd) is not None, f"{crd} was deleted"
    assert kube_json(stack, "get", "modelversion", "iris-manual", "-n", ns) is not None
    assert kube_json(stack, "get", "clusterrole", f"{RELEASE}-mlops-operator") is None
    poll("the operator pod to go", lambda: not stack.operator_pods(), timeout=120, interval=1)
