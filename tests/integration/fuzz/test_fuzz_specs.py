"""Fuzzing specs against the real apiserver with the operator running.

Each hypothesis-generated TrainingRun / ModelVersion / ModelDeployment spec (:mod:`specgen`:
drawn from the CRD schemas or mutated examples, with invalid values mixed in) is created in the
test's namespace. Either the apiserver rejects it (400/422) with a message that names a field
under ``spec``, or it is accepted and the operator reconciles it: the object gets a status, and
the operator logs no traceback (nor a status write the apiserver refused) and counts no
unexpected reconcile error.

``MLOPS_FUZZ_EXAMPLES`` (default 40) sets the examples per kind; the run is derandomized, so CI
sees the same examples every time (``MLOPS_FUZZ_SEED`` picks another fixed sequence).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from specgen import KINDS, specs

from mlops_localstack.cluster import poll

pytestmark = pytest.mark.integration

GROUP, VERSION = "mlops.dev", "v1alpha1"
EXAMPLES = int(os.environ.get("MLOPS_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("MLOPS_FUZZ_SEED", "0"))
#: operator log lines that mean a handler crashed or its result was lost
CRASH_MARKS = ("Traceback", "reconcile failed", "reconcile pass crashed", "status write failed")


def _unexpected_errors(operator: Any) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == "mlops_reconcile_errors_total" and \
                    sample.labels.get("error") == "unexpected":
                total += sample.value
    return total


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_spec_is_rejected_with_a_message_or_reconciled_without_a_crash(
    kind: str, k8s_client: Any, namespace: str, operator: Any
) -> None:
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    api = CustomObjectsApi(k8s_client)
    plural = KINDS[kind]
    numbers = itertools.count()
    accepted: dict[str, dict[str, Any]] = {}
    rejected: list[str] = []

    retried: set[str] = set()

    def create(body: dict[str, Any]) -> None:
        """Create; a request that timed out (a loaded machine) is sent again, twice at most."""
        from urllib3.exceptions import HTTPError

        for attempt in range(3):
            try:
                api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body,
                                                    _request_timeout=60)
                return
            except HTTPError:
                if attempt == 2:
                    raise
                retried.add(body["metadata"]["name"])

    @seed(SEED)
    @settings(max_examples=EXAMPLES, derandomize=SEED == 0, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(spec=specs(kind))
    def apply(spec: dict[str, Any]) -> None:
        name = f"fz-{next(numbers)}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name},
                "spec": spec}
        try:
            create(body)
        except ApiException as exc:
            if exc.status == 409 and name in retried:  # created by the attempt that timed out
                accepted[name] = spec
                return
            assert exc.status in (400, 422), (exc.status, exc.body, spec)
            message = json.loads(exc.body).get("message", "")
            assert message.strip(), (exc.body, spec)
            assert "spec" in message, (message, spec)  # names the field under spec
            rejected.append(message)
            return
        accepted[name] = spec

    apply()
    print(f"{kind}: {len(accepted)} accepted, {len(rejected)} rejected")

    def unreconciled() -> dict[str, Any]:
        items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                  _request_timeout=60)["items"]
        return {o["metadata"]["name"]: o["spec"] for o in items
                if o["metadata"]["name"] in accepted and not o.get("status")}

    if accepted:
        poll(f"a status on every accepted {kind}", lambda: not unreconciled(), timeout=240,
             interval=1)
    logs = operator.logs()
    crashes = [line for line in logs.splitlines()
               if any(mark in line for mark in CRASH_MARKS)]
    assert not crashes, "\n".join(crashes[:5]) + "\n...\n" + logs[-6000:]
    assert _unexpected_errors(operator) == 0, logs[-6000:]
    assert operator.alive(), logs[-3000:]
