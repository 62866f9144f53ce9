"""A pod worker runs a pod against a fake PodHost: it needs no stand-in and no API server."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from mlops_localstack.cluster import poll
from mlops_localstack.node.api import Endpoint
from mlops_localstack.node.host import NodeSettings
from mlops_localstack.node.runtime import DEFAULT_IMAGE_ENTRYPOINTS
from mlops_localstack.node.worker import PodWorker

JSON = dict[str, Any]


class FakeHost:
    """A :class:`PodHost` that records what the worker asks of its node."""

    def __init__(self, workdir: Path) -> None:
        prefix = Path(sys.prefix)
        self.settings = NodeSettings(
            name="fake-node", workdir=workdir, host_ip="127.0.0.1", python_prefix=prefix,
            default_path=f"{prefix / 'bin'}:/usr/bin:/bin",
            image_entrypoints=DEFAULT_IMAGE_ENTRYPOINTS, allocatable={"cpu": "1"},
            max_grace_period=1.0, restart_backoff=0.1, restart_backoff_max=0.5,
        )
        self.endpoint = Endpoint("https://127.0.0.1:6443", None, True)
        self.stopping = threading.Event()
        self.ca_bytes = None
        self.statuses: list[JSON] = []
        self.events: list[str] = []
        self.finished_uids: list[str] = []
        self.rv = 1

    def lookup(self, kind: str, namespace: str, name: str) -> JSON | None:
        return None

    def request_token(self, pod: JSON, audience: str | None, expiration: int) -> str:
        return "token"

    def event(self, pod: JSON, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(reason)

    def read_pod(self, namespace: str, name: str) -> JSON | None:
        return None

    def patch_pod_status(self, namespace: str, name: str, body: JSON) -> JSON:
        self.statuses.append(body["status"])
        self.rv += 1
        return {}

    def delete_pod_now(self, pod: JSON) -> None:
        pass

    def allocate_ip(self, uid: str, previous: str | None) -> str:
        return "127.10.0.7"

    def finished(self, uid: str) -> None:
        self.finished_uids.append(uid)


def test_worker_runs_a_pod_to_completion_through_its_host(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "1"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "python",
            "command": ["python", "-c", "import os; print('ip', os.environ['MLOPS_LOCAL_POD_IP'])"],
        }]},
    }
    worker = PodWorker(host, pod)
    worker.start()
    try:
        done = poll("a Succeeded status", lambda: [s for s in host.statuses
                                                   if s["phase"] == "Succeeded"], timeout=30)
    finally:
        host.stopping.set()
        worker.wake.set()
        worker.join(5)
    assert done[-1]["podIP"] == "127.10.0.7"
    assert done[-1]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "Started" in host.events
    assert host.finished_uids == ["u-1"]
    log = (tmp_path / "pods" / "ns_p_u-1" / "main.log").read_text()
    assert "ip 127.10.0.7" in log
