"""The Prometheus rules in rules/: ``promtool check rules``, ``promtool test rules`` for every
alert, proof that each alert's tests would notice a broken rule, and the chart's copy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
RULE_FILES = sorted(RULES.glob("*.rules.yaml"))
TEST_FILES = sorted((RULES / "tests").glob("*.test.yaml"))
CHART_RULES = REPO / "charts" / "mlops-operator" / "files" / "rules"
#: the labels the operator's receiver matches a ModelDeployment by (docs/closed-loop.md)
RECEIVER_LABELS = ("namespace", "deployment", "model", "variant")


def _promtool() -> str:
    found = os.environ.get("MLOPS_PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool not found (Debian: apt-get install prometheus; or MLOPS_PROMTOOL)")
    return found


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


def _alerts() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_there_are_rule_files_and_tests() -> None:
    assert RULE_FILES and TEST_FILES
    assert {r["alert"] for r in _alerts()} == {
        "ModelFeatureDrift", "ModelHighErrorRate", "ModelHighLatencyP95", "ModelNoTraffic"}


def test_promtool_check_rules() -> None:
    out = _run("check", "rules", *map(str, RULE_FILES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    out = _run("test", "rules", *map(str, TEST_FILES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_test() -> None:
    tested = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert tested == {r["alert"] for r in _alerts()}


@pytest.mark.parametrize("alert", [r["alert"] for r in _alerts()])
def test_the_tests_notice_a_broken_rule(alert: str, tmp_path: Path) -> None:
    """Replace one alert's expression by one that never fires: ``promtool test`` must fail."""
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = "vector(0) > 1"
        (tmp_path / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "tests").mkdir()
    for test in TEST_FILES:
        shutil.copy(test, tmp_path / "tests" / test.name)
    out = _run("test", "rules", *[f"tests/{t.name}" for t in TEST_FILES], cwd=tmp_path)
    assert out.returncode != 0
    assert alert in out.stdout + out.stderr


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_alerts_carry_what_the_receiver_matches_on(rule: dict) -> None:
    assert rule["labels"]["modeldeployment"] == "{{ $labels.deployment }}"
    assert rule["labels"]["severity"] in ("info", "warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    for by in re.findall(r"(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
        labels = {label.strip() for label in by.split(",")}
        assert set(RECEIVER_LABELS) <= labels, (rule["alert"], by)


def _helm() -> str:
    helm = shutil.which("helm") or str(Path(os.environ.get("GOPATH", Path.home() / "go"))
                                       / "bin" / "helm")
    if not Path(helm).exists():
        pytest.skip("helm not found (`make helm`)")
    return helm


def test_the_chart_renders_the_same_rules_as_a_prometheusrule() -> None:
    assert sorted(p.name for p in CHART_RULES.glob("*.yaml")) == [p.name for p in RULE_FILES]
    out = subprocess.run(
        [_helm(), "template", "mlops", str(REPO / "charts" / "mlops-operator"),
         "--kube-version", "1.34.4", "--set", "prometheusRule.enabled=true",
         "--set", "prometheusRule.labels.release=kps"],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    [rule] = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    expected = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    off = subprocess.run(
        [_helm(), "template", "mlops", str(REPO / "charts" / "mlops-operator"),
         "--kube-version", "1.34.4"], capture_output=True, text=True, timeout=120, check=False)
    assert off.returncode == 0, off.stderr
    assert "PrometheusRule" not in off.stdout  # off by default: the CRD may not exist
