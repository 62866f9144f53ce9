"""The Argo CD health script, run in gopher-lua (the Lua 5.1 Argo CD embeds) by hack/argocd-health."""

from __future__ import annotations

from typing import Any

import pytest
from argocd_health import health


def cond(type_: str, status: str, reason: str = "R", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


META = {"name": "x", "generation": 2}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "Progressing"),
        ({"observedGeneration": 1, "phase": "Succeeded",
          "conditions": [cond("Ready", "True")]}, "Progressing"),
        ({"observedGeneration": 2, "phase": "Succeeded",
          "conditions": [cond("Ready", "True", message="trained")]}, "Healthy"),
        ({"observedGeneration": 2, "phase": "Promoted",
          "conditions": [cond("Ready", "True")]}, "Healthy"),
        ({"observedGeneration": 2, "phase": "Running",
          "conditions": [cond("Ready", "False", "JobRunning")]}, "Progressing"),
        ({"observedGeneration": 2, "phase": "Failed",
          "conditions": [cond("Ready", "False", "BackoffLimitExceeded", "exit code 1")]},
         "Degraded"),
        ({"observedGeneration": 2, "phase": "Rejected",
          "conditions": [cond("Ready", "False", "GateFailed")]}, "Degraded"),
        ({"observedGeneration": 2, "phase": "AwaitingApproval",
          "conditions": [cond("Ready", "False", "AwaitingApproval")]}, "Suspended"),
        ({"observedGeneration": 2, "phase": "Progressing",
          "conditions": [cond("Ready", "True"), cond("Degraded", "True", "AnalysisFailed")]},
         "Degraded"),
    ],
)
def test_health(status: dict[str, Any] | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": META}
    if status is not None:
        obj["status"] = status
    assert health(obj)[0] == expected


def test_message_comes_from_the_condition() -> None:
    obj = {"metadata": META, "status": {"observedGeneration": 2, "phase": "Failed",
                                        "conditions": [cond("Ready", "False", "X", "exit 3")]}}
    assert health(obj) == ("Degraded", "exit 3")


def test_runs_in_gopher_lua_with_argo_cds_libraries(tmp_path) -> None:  # noqa: ANN001
    """The helper is gopher-lua with Argo CD's library set: `os`/`io` are not there."""
    probe = tmp_path / "probe.lua"
    probe.write_text('return {status = "Healthy", message = _VERSION .. " os=" .. tostring(os)'
                     ' .. " io=" .. tostring(io) .. " n=" .. obj.n}')
    assert health({"n": 3}, script=probe) == ("Healthy", "Lua 5.1 os=nil io=nil n=3")


@pytest.mark.parametrize(("body", "error"), [
    ("return {status = 'Fine'}", "invalid health status"),
    ("return 'Healthy'", "expect table output"),
    ("error('boom')", "boom"),
])
def test_a_bad_script_is_an_error_not_a_status(tmp_path, body: str, error: str) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.lua"
    bad.write_text(body)
    with pytest.raises(AssertionError, match=error):
        health({}, script=bad)


def test_the_documented_argocd_cm_snippet_carries_the_script_for_the_three_kinds() -> None:
    import yaml
    from argocd_health import REPO, SCRIPT

    cm = yaml.safe_load((REPO / "examples/argocd/argocd-cm.yml").read_text())
    keys = {f"resource.customizations.health.mlops.dev_{k}"
            for k in ("TrainingRun", "ModelVersion", "ModelDeployment")}
    assert set(cm["data"]) == keys
    assert all(cm["data"][k] == SCRIPT.read_text() for k in keys)


def test_the_example_applications_sync_server_side(tmp_path) -> None:  # noqa: ANN001
    import yaml
    from argocd_health import REPO

    apps = list(yaml.safe_load_all((REPO / "examples/argocd/application.yml").read_text()))
    assert [a["kind"] for a in apps] == ["Application", "Application"]
    for app in apps:
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    chart = apps[0]["spec"]["source"]
    assert chart["chart"] == "mlops-operator" and chart["helm"]["valuesObject"]["mlflow"]["trackingUri"]
    assert (REPO / apps[1]["spec"]["source"]["path"]).is_dir()
