"""``stages`` against the real Prometheus: its queries are valid PromQL (with and without a
window), and an unreachable or wrong URL is an error, not a table of zeros."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from mlops_operator import stages

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("window", [None, "1h"])
def test_the_queries_run_on_the_real_prometheus(prometheus: Any, window: str | None) -> None:
    out = io.StringIO()
    assert stages.main(prometheus.url, window=window, as_json=True, out=out) == 0
    rows = json.loads(out.getvalue())
    assert [r["stage"] for r in rows] == list(stages.STAGES)
    assert all(r["runs"] == 0 for r in rows)  # no operator scraped here


def test_a_bad_window_is_an_error(prometheus: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert stages.main(prometheus.url, window="1 hour") == 1
    assert "cannot read stage metrics" in capsys.readouterr().err
