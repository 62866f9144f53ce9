"""The receiver's blocking half: match alerts to ModelDeployments, create TrainingRuns, post Events.

Runs in the receiver's small thread pool (``kube`` blocks). Per alert and matching deployment:

1. firing? (resolved → nothing), a retrain alert of that deployment? (``spec.retrain.alerts``);
2. under a per-deployment lock (so the cooldown and maxConcurrent checks and the create are
   atomic within this process): list the deployment's TrainingRuns, :func:`~.retrain.decide`;
3. create the deterministic TrainingRun; a 409 is a concurrent or earlier duplicate (the name is
   the dedupe key in the API, which also holds across restarts and replicas); a rejection
   (400/403/404/422) is a Warning Event on the deployment and nothing else;
4. an Event on the deployment for created and skipped retrains (named per episode and reason,
   so Alertmanager's repeats do not multiply them); skips are logged and counted in
   ``mlops_retrain_skipped_total{reason}``.

Transient API failures (5xx, 429, connection errors) end the notification with 503, so
Alertmanager sends it again; everything done before is found again by name.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from .. import API_VERSION, kube
from ..builders.common import LABEL_DEPLOYMENT, OPERATOR, label_value, short_hash
from ..failpoints import failpoint
from ..metrics import observe_stage
from .payload import Alert, Notification
from .retrain import (
    LABEL_ALERT_EPISODE,
    build_retrain_trainingrun,
    decide,
    deployment_selector,
    isoformat,
)

log = logging.getLogger(__name__)

RETRAIN_SKIPPED = Counter(
    "mlops_retrain_skipped",
    "Alerts that started no TrainingRun, by reason (resolved, not-a-retrain-alert, "
    "no-deployment, duplicate, cooldown, max-concurrent, rejected, ...)",
    ["reason"],
)
ALERTS_RECEIVED = Counter(
    "mlops_alerts_received", "Alerts received by the webhook, by alert status", ["status"]
)
#: A DNS-1123 subdomain: what a namespace or object name from a label must be before it goes
#: into an API path.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_REJECTED = (400, 403, 404, 422)


class TransientError(Exception):
    """The API could not be reached or answered 5xx/429: the whole notification gets a 503."""


@dataclass
class Result:
    """What happened to one alert (for one deployment), as reported in the response body."""

    alert: str
    fingerprint: str
    status: str
    action: str  # created | skipped
    reason: str = ""
    message: str = ""
    deployment: str | None = None  # namespace/name
    training_run: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"alert": self.alert, "fingerprint": self.fingerprint, "status": self.status,
               "action": self.action}
        for key, value in (("reason", self.reason), ("message", self.message),
                           ("deployment", self.deployment), ("trainingRun", self.training_run)):
            if value:
                out[key] = value
        return out


@dataclass
class Retrainer:
    """Turns alerts into TrainingRuns. ``namespaces``: the operator's watched namespaces
    (globs); alerts for other namespaces are skipped (``namespace-not-watched``)."""

    namespaces: Sequence[str] = ()
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def handle(self, notification: Notification) -> list[Result]:
        """Every alert of a notification, in order; :class:`TransientError` on API trouble."""
        return [r for alert in notification.alerts for r in self.handle_alert(alert)]

    def handle_alert(self, alert: Alert) -> list[Result]:
        """One alert (thread-safe: the server runs the alerts of a notification in parallel)."""
        started = time.monotonic()
        ALERTS_RECEIVED.labels(status=alert.status).inc()

        def skip(reason: str, message: str, deployment: str | None = None) -> Result:
            RETRAIN_SKIPPED.labels(reason=reason).inc()
            log.info("alert %s (%s) started no retrain: %s: %s", alert.name, alert.key, reason,
                     message)
            return Result(alert.name, alert.key, alert.status, "skipped", reason, message,
                          deployment)

        if alert.status != "firing":
            return [skip("resolved", "resolved alerts start nothing")]
        namespace = alert.labels.get("namespace", "")
        if not _NAME.fullmatch(namespace) or len(namespace) > 63:
            return [skip("no-deployment", "the alert has no valid namespace label")]
        if self.namespaces and not any(fnmatch.fnmatchcase(namespace, pattern)
                                       for pattern in self.namespaces):
            return [skip("namespace-not-watched",
                         f"namespace {namespace} is not watched by this operator")]
        try:
            deployments = self._deployments(namespace, alert.labels)
        except Exception as exc:
            raise _classify(exc, "reading ModelDeployments") from exc
        if not deployments:
            return [skip("no-deployment", "no ModelDeployment matches the alert's labels "
                         "(namespace and modeldeployment or model)")]
        results = []
        for md in deployments:
            where = f"{namespace}/{md['metadata']['name']}"
            retrain = (md.get("spec") or {}).get("retrain") or {}
            if alert.name not in (retrain.get("alerts") or []):
                results.append(skip("not-a-retrain-alert",
                                    f"{alert.name} is not in spec.retrain.alerts", where))
            elif md["metadata"].get("deletionTimestamp"):
                results.append(skip("no-deployment", "the ModelDeployment is being deleted",
                                    where))
            elif not isinstance(retrain.get("template"), dict):
                results.append(skip("rejected", "spec.retrain has no template", where))
            else:
                results.append(self._retrain(md, retrain, alert, started, skip))
        return results

    def _deployments(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        name = labels.get("modeldeployment") or ""
        if name:
            if not _NAME.fullmatch(name):
                return []
            found = kube.get(API_VERSION, "ModelDeployment", namespace, name)
            return [found] if found else []
        model = labels.get("model") or ""
        if not model:
            return []
        items = kube.list_(API_VERSION, "ModelDeployment", namespace)
        return [md for md in items if (md.get("spec") or {}).get("model") == model]

    def _retrain(self, md: dict[str, Any], retrain: Mapping[str, Any], alert: Alert,
                 started: float, skip: Callable[..., Result]) -> Result:
        name = md["metadata"]["name"]
        namespace = md["metadata"]["namespace"]
        where = f"{namespace}/{name}"
        with self._lock(namespace, name):
            try:
                runs = kube.list_(API_VERSION, "TrainingRun", namespace, deployment_selector(name))
            except Exception as exc:
                raise _classify(exc, "listing TrainingRuns") from exc
            now = self.now()
            decision = decide(runs, alert.episode, retrain, now)
            if decision.action == "skip":
                result = skip(decision.reason, decision.message, where)
                result.training_run = decision.existing
                if decision.reason != "duplicate":  # a repeat is not news
                    self._event(md, alert, "Normal", "RetrainSkipped",
                                f"alert {alert.name} ({alert.key}) started no retrain: "
                                f"{decision.reason}: {decision.message}", decision.reason)
                return result
            manifest = build_retrain_trainingrun(md, alert, now)
            tr_name = manifest["metadata"]["name"]
            try:
                obj, created = kube.create_or_get(manifest)
            except Exception as exc:
                if not kube.is_status(exc, *_REJECTED):
                    raise _classify(exc, f"creating TrainingRun {tr_name}") from exc
                message = (f"alert {alert.name} ({alert.key}): the apiserver rejected "
                           f"TrainingRun {tr_name} from spec.retrain.template: "
                           f"{kube.error_message(exc)}")
                observe_stage("retrain", "failure", time.monotonic() - started)
                self._event(md, alert, "Warning", "RetrainRejected", message, "rejected")
                return skip("rejected", message[:1024], where)
        if not created:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_ALERT_EPISODE) != alert.episode:
                return skip("name-conflict", f"TrainingRun {tr_name} exists and was not "
                            "started by this alert", where)
            result = skip("duplicate", f"this alert episode already started TrainingRun "
                          f"{tr_name}", where)
            result.training_run = tr_name
            return result
        failpoint("after-retrain-created", f"{namespace}/{tr_name}")
        observe_stage("retrain", "success", time.monotonic() - started)
        log.info("alert %s (%s) started TrainingRun %s/%s", alert.name, alert.key, namespace,
                 tr_name)
        self._event(md, alert, "Normal", "RetrainStarted",
                    f"alert {alert.name} ({alert.key}, since {alert.starts_at}) started "
                    f"TrainingRun {tr_name}", "created")
        return Result(alert.name, alert.key, alert.status, "created", "", "", where, tr_name)

    def _event(self, md: Mapping[str, Any], alert: Alert, type_: str, reason: str,
               message: str, kind: str) -> None:
        """An Event on the deployment, one per (episode, outcome): best effort, never raises."""
        try:
            kube.create_or_get(build_event(md, alert.episode, type_, reason, message, kind,
                                           self.now()))
        except Exception as exc:  # noqa: BLE001 - an Event is never worth failing the alert
            log.warning("could not post Event %s on ModelDeployment %s: %s", reason,
                        md["metadata"]["name"], kube.error_message(exc))


def build_event(md: Mapping[str, Any], episode: str, type_: str, reason: str, message: str,
                kind: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event on a ModelDeployment, named per (deployment, episode, outcome)."""
    meta = md["metadata"]
    stamp = isoformat(now).split(".")[0] + "Z"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name'][:200]}.retrain-{episode}-{short_hash(kind, 6)}",
            "namespace": meta["namespace"],
            "labels": {LABEL_DEPLOYMENT: label_value(meta["name"])},
        },
        "involvedObject": {"apiVersion": API_VERSION, "kind": "ModelDeployment",
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta.get("uid")},
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": OPERATOR},
        "reportingComponent": OPERATOR,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _classify(exc: Exception, doing: str) -> Exception:
    """Any failure that is not a rejection is transient: Alertmanager will send again."""
    return TransientError(f"{doing}: {kube.error_message(exc)}"[:1024])
