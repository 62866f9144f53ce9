"""`LocalStack` (what `mlops-operator local up` supervises) wires Prometheus to the operator."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mlops_localstack.stack import LocalStack, read_state

pytestmark = pytest.mark.integration


def test_stack_records_prometheus_and_hands_it_to_the_operator(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, with_node=False).start()
    try:
        state = read_state(tmp_path)
        assert state is not None and state["ready"]
        url = state["prometheusUrl"]
        assert state["components"]["prometheus"] == url
        assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
        assert stack.operator is not None
        environ = Path(f"/proc/{stack.operator.pid}/environ").read_bytes().split(b"\0")
        assert f"MLOPS_PROMETHEUS_URL={url}".encode() in environ
    finally:
        stack.stop()
    assert read_state(tmp_path) is None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/-/ready", timeout=2)
