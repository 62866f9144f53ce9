"""Which failed applies a ModelDeployment reports, and the Degraded reason it gives."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import ProtocolError

from mlops_operator.handlers.md_children import _refused
from mlops_operator.handlers.modeldeployment import _problem_reason


def api_error(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason="refused")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500])
def test_an_answer_that_names_its_reason_is_reported(status: int) -> None:
    """Bad input, admission and quota, the apiserver failing to admit ("range is full")."""
    assert _refused(api_error(status, "Internal error occurred: failed to allocate a serviceIP"))


@pytest.mark.parametrize("exc", [api_error(429), api_error(502), api_error(503), api_error(504),
                                 ProtocolError("connection aborted"), ValueError("a bug")])
def test_an_apiserver_away_or_a_bug_is_retried_not_reported(exc: Exception) -> None:
    assert not _refused(exc)


def test_the_reason_names_the_most_fundamental_problem() -> None:
    analysis = {"analysis/error-rate": "analysis metric error-rate: rejected"}
    refused = {"apply/Service/md": "Service md: exceeded quota"}
    variant = {"champion": "variant champion: alias missing"}
    assert _problem_reason(analysis) == "AnalysisQueryRejected"
    assert _problem_reason({**analysis, **refused}) == "ApplyRefused"
    assert _problem_reason({**analysis, **refused, **variant}) == "VariantsUnresolved"
