"""Pure builders of a variant's HorizontalPodAutoscaler (``spec.runtime.autoscaling``)."""

from __future__ import annotations

from typing import Any

from ..api import ModelDeploymentSpec
from ..api.modeldeployment import Autoscaling
from .modeldeployment import (
    RPS_METRIC,
    Role,
    child_metadata,
    find_variant,
    md_labels,
    server_selector,
    variant_name,
)


def _quantity(value: float) -> str:
    """A Kubernetes quantity for ``value`` (milli-units when it is not an integer)."""
    milli = round(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def hpa_metrics(autoscaling: Autoscaling) -> list[dict[str, Any]]:
    """The HPA's metrics: CPU utilization and/or requests per second per pod."""
    metrics: list[dict[str, Any]] = []
    if autoscaling.target_cpu_utilization_percentage is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                    },
                },
            }
        )
    if autoscaling.target_requests_per_second is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": RPS_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": _quantity(autoscaling.target_requests_per_second),
                    },
                },
            }
        )
    return metrics


def build_hpa(
    md_name: str,
    namespace: str,
    uid: str,
    spec: ModelDeploymentSpec,
    variant: str,
    role: Role = "stable",
) -> dict[str, Any] | None:
    """The ``autoscaling/v2`` HPA of one variant Deployment, or ``None`` without autoscaling.

    ``minReplicas`` is at least 1: 0 needs the ``HPAScaleToZero`` feature gate, which the
    apiserver rejects otherwise.
    """
    autoscaling = spec.runtime.autoscaling
    if autoscaling is None:
        return None
    find_variant(spec, variant)
    name = variant_name(md_name, variant, role)
    labels = {**md_labels(md_name, spec.model), **server_selector(md_name, variant, role)}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(name, namespace, uid, md_name, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(1, autoscaling.min_replicas),
            "maxReplicas": autoscaling.max_replicas,
            "metrics": hpa_metrics(autoscaling),
        },
    }
