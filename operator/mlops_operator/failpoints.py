"""Test-only fault injection, like etcd's gofail: exit abruptly right after a side effect.

``MLOPS_FAILPOINT=<point>`` fires for any object, ``<point>@<namespace>/<name>`` only for that
one. Points: ``after-run-created``, ``before-job-created``, ``after-job-created``,
``after-registered`` (TrainingRun),
``after-retrain-created`` (the alert receiver, before it answers Alertmanager). The restart tests
use them to prove that a restarted operator neither duplicates nor loses anything.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
ENV = "MLOPS_FAILPOINT"


def failpoint(name: str, target: str = "") -> None:
    """Exit the process now (``os._exit(1)``) if ``MLOPS_FAILPOINT`` names this point."""
    point, _, only = os.environ.get(ENV, "").partition("@")
    if point == name and (not only or only == target):
        log.warning("failpoint %s reached: exiting abruptly", name)
        logging.shutdown()
        os._exit(1)
