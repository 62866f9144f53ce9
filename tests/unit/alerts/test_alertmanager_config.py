"""The local stack's Alertmanager config: amtool accepts it, it carries the token and the route;
the rules rendered for the demo keep everything but ``for:``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_localstack import alertmanager as am


@pytest.fixture
def amtool() -> None:
    if am.find_amtool() is None:
        pytest.skip("amtool not found (Debian: prometheus-alertmanager)")


def test_the_config_passes_amtool_and_routes_everything_with_the_token(
    tmp_path: Path, amtool: None,
) -> None:
    server = am.AlertmanagerServer(tmp_path, receiver_url="http://127.0.0.1:9/api/v1/alerts",
                                   token="t0ken")
    path = server.write_config()
    out = am.check_config(path)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load(path.read_text())
    assert config["route"]["receiver"] == "mlops-operator"
    assert config["route"]["group_by"] == ["alertname", "namespace", "modeldeployment"]
    [hook] = config["receivers"][0]["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:9/api/v1/alerts"
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    assert Path(auth["credentials_file"]).read_text() == "t0ken"
    assert Path(auth["credentials_file"]).stat().st_mode & 0o077 == 0
    assert "t0ken" not in path.read_text()


def test_amtool_rejects_a_broken_config(tmp_path: Path, amtool: None) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"route": {"receiver": "nobody"}, "receivers": []}))
    assert am.check_config(path).returncode != 0


def test_prometheus_alerting_section() -> None:
    assert am.prometheus_alerting("http://127.0.0.1:9093") == {
        "alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]}


def test_rendered_rules_only_change_for(tmp_path: Path) -> None:
    [out] = am.render_rules(tmp_path, for_overrides={"ModelFeatureDrift": "20s", "*": "1m"})
    source = yaml.safe_load((am.REPO_RULES / out.name).read_text())
    rendered = yaml.safe_load(out.read_text())
    fors = {r["alert"]: r["for"] for g in rendered["groups"] for r in g["rules"]}
    assert fors == {"ModelFeatureDrift": "20s", "ModelHighErrorRate": "1m",
                    "ModelHighLatencyP95": "1m", "ModelNoTraffic": "1m"}
    for g in source["groups"] + rendered["groups"]:
        for r in g["rules"]:
            r.pop("for")
    assert source == rendered


def test_rendered_rules_pass_promtool(tmp_path: Path) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found")
    paths = am.render_rules(tmp_path, for_overrides={"*": "30s"})
    out = subprocess.run([promtool, "check", "rules", *map(str, paths)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
