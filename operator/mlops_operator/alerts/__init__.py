"""The closed loop's entry: Alertmanager's webhook turns firing alerts into TrainingRuns.

* :mod:`.payload` — the webhook payload (version 4), validated; alert episodes;
* :mod:`.retrain` — pure decisions (dedupe, cooldown, maxConcurrent), the TrainingRun builder,
  and :func:`last_retrain` for the ModelDeployment controller's ``status.lastRetrain``;
* :mod:`.service` — the blocking half (Kubernetes reads/creates, Events, skip counters);
* :mod:`.server` — the aiohttp server; :func:`start_receiver` / :func:`stop_receiver` are
  called by the operator's startup/cleanup handlers.

See docs/closed-loop.md.
"""

from .payload import Alert, Notification, PayloadError, parse_notification
from .retrain import build_retrain_trainingrun, decide, deployment_selector, last_retrain
from .server import PATH, ReceiverConfig, ReceiverHandle, create_app, start_receiver, stop_receiver
from .service import Retrainer

__all__ = [
    "PATH",
    "Alert",
    "Notification",
    "PayloadError",
    "ReceiverConfig",
    "ReceiverHandle",
    "Retrainer",
    "build_retrain_trainingrun",
    "create_app",
    "decide",
    "deployment_selector",
    "last_retrain",
    "parse_notification",
    "start_receiver",
    "stop_receiver",
]
