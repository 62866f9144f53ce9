"""What users see: printer columns of `kubectl get` and descriptions in `kubectl explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "iris"

# Status the operator would write, set through the status subresource.
STATUS = {
    "trainingrun/iris-train-1": {
        "phase": "Succeeded",
        "mlflowRunId": "0123456789abcdef",
        "primaryMetric": {"name": "accuracy", "value": 0.9667},
        "startTime": "2024-05-01T12:00:00Z",
        "modelVersion": {"version": "4", "name": "iris-train-1"},
        "jobName": "iris-train-1",
    },
    "modelversion/iris-v1": {
        "phase": "Promoted",
        "version": "1",
        "alias": "champion",
        "primaryMetric": {"name": "accuracy", "value": 0.95},
        "previousChampion": "0",
        "checks": [{"name": "accuracy", "value": 0.95, "threshold": 0.9, "passed": True}],
    },
    "modeldeployment/iris": {
        "phase": "Ready",
        "champion": "3",
        "challenger": "4",
        "traffic": "champion=90 challenger=10",
        "ready": "3/3",
        "url": "http://iris.default.svc:8080",
        "variants": [
            {"name": "champion", "version": "3", "weight": 90, "replicas": 2, "readyReplicas": 2},
            {"name": "challenger", "version": "4", "weight": 10, "replicas": 1, "readyReplicas": 1},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllVariantsReady",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
            }
        ],
    },
}


@pytest.fixture
def populated(kubectl: Any, namespace: str, crds: list[str]) -> str:
    for name in ("trainingrun.yaml", "modelversion.yaml", "modeldeployment.yaml"):
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / name))
    for ref, status in STATUS.items():
        kubectl(
            "patch",
            ref,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
    return namespace


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines() if line.strip()]


def test_get_md_columns(kubectl: Any, populated: str) -> None:
    rows = _table(kubectl("get", "md", "-n", populated).stdout)
    assert rows[0] == [
        "NAME",
        "MODEL",
        "CHAMPION",
        "CHALLENGER",
        "TRAFFIC",
        "READY",
        "PHASE",
        "AGE",
    ]
    # TRAFFIC has a space in it: "champion=90 challenger=10".
    assert rows[1][:8] == ["iris", "iris", "3", "4", "champion=90", "challenger=10", "3/3", "Ready"]
    wide = _table(kubectl("get", "md", "-n", populated, "-o", "wide").stdout)
    assert "URL" in wide[0] and "http://iris.default.svc:8080" in wide[1]


def test_get_tr_mv_md_columns(kubectl: Any, populated: str) -> None:
    out = kubectl("get", "tr,mv,md", "-n", populated).stdout
    blocks = [_table(b) for b in out.strip().split("\n\n")]
    by_header = {tuple(b[0]): b[1:] for b in blocks}
    tr_header = ("NAME", "MODEL", "PHASE", "RUN", "METRIC", "VALUE", "AGE")
    mv_header = ("NAME", "MODEL", "VERSION", "PHASE", "ALIAS", "METRIC", "VALUE", "AGE")
    assert by_header[tr_header][0][:6] == [
        "trainingrun.mlops.dev/iris-train-1",
        "iris",
        "Succeeded",
        "0123456789abcdef",
        "accuracy",
        "0.9667",
    ]
    assert by_header[mv_header][0][:7] == [
        "modelversion.mlops.dev/iris-v1",
        "iris",
        "1",
        "Promoted",
        "champion",
        "accuracy",
        "0.95",
    ]
    assert any(h[1:4] == ("MODEL", "CHAMPION", "CHALLENGER") for h in by_header)


def test_get_mlops_category_lists_every_kind(kubectl: Any, populated: str) -> None:
    out = kubectl("get", "mlops", "-n", populated, "-o", "name").stdout.split()
    assert sorted(out) == [
        "modeldeployment.mlops.dev/iris",
        "modelversion.mlops.dev/iris-v1",
        "trainingrun.mlops.dev/iris-train-1",
    ]
    table = kubectl("get", "mlops", "-n", populated).stdout
    assert "CHAMPION" in table and "RUN" in table and "ALIAS" in table


def test_short_names(kubectl: Any, populated: str) -> None:
    for short, name in [("tr", "iris-train-1"), ("mv", "iris-v1"), ("md", "iris")]:
        out = kubectl("get", short, "-n", populated, "-o", "name").stdout.strip()
        assert out.endswith(f"/{name}")


def test_explain_shows_descriptions(kubectl: Any, cluster: Any, crds: list[str]) -> None:
    # The OpenAPI document is published asynchronously after the CRD is Established.
    def explain() -> str:
        proc = kubectl("explain", "modeldeployment.spec.variants", check=False)
        return proc.stdout if proc.returncode == 0 and "modelUri" in proc.stdout else ""

    out = cluster.wait_for("kubectl explain modeldeployment.spec.variants", explain, timeout=60)
    flat = " ".join(out.split())
    assert "Models served side by side (champion, challenger, ...)" in flat
    assert "What to serve: models:/<name>@<alias> (resolved to a pinned version)" in flat
    assert "weights of all variants sum to 100" in flat
    assert "-required-" in out
    spec = " ".join(kubectl("explain", "trainingrun.spec").stdout.split())
    assert "Hyperparameters, logged to MLflow" in spec
    status = " ".join(kubectl("explain", "modeldeployment.status.ready").stdout.split())
    assert "Ready over desired replicas" in status
