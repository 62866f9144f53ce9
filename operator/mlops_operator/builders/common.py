"""What every builder shares: label keys, names, owner references, the pod security context.

Pure functions and constants only. Every child the operator creates carries
``app.kubernetes.io/managed-by: mlops-operator`` and ``mlops.dev/<kind>: <name>``; owner
references are written here rather than with ``kopf.adopt``, which would also copy the owner's
labels (Argo CD's tracking label among them) onto the children.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from .. import API_VERSION

MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "mlops-operator"
#: ``{MANAGED_BY: OPERATOR}``: the selector of everything this operator created.
MANAGED_BY_LABELS: Mapping[str, str] = {MANAGED_BY: OPERATOR}
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_TRAININGRUN = "mlops.dev/trainingrun"
LABEL_MODELVERSION = "mlops.dev/modelversion"
LABEL_DEPLOYMENT = "mlops.dev/deployment"
LABEL_VARIANT = "mlops.dev/variant"
LABEL_VERSION = "mlops.dev/version"
LABEL_MODEL = "mlops.dev/model"
LABEL_RUN_ID = "mlops.dev/run-id"
MAX_NAME = 63  # names that become label values (Job → pod labels) or Service names


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def truncate(text: str, limit: int, suffix: str = "") -> str:
    """``text + suffix`` if it fits in ``limit``, else a prefix, a hash of ``text``, ``suffix``."""
    if len(text) + len(suffix) <= limit:
        return text + suffix
    keep = limit - len(suffix) - 9
    head = re.sub(r"[^A-Za-z0-9]+$", "", text[:keep])
    return f"{head}-{short_hash(text)}{suffix}"


def child_name(owner: str, suffix: str, limit: int = MAX_NAME) -> str:
    """``<owner>-<suffix>``, shortened with a hash of ``owner`` to fit ``limit`` characters."""
    return truncate(owner, limit, f"-{suffix}")


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 chars, alphanumeric ends), hashed when too long."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    out = truncate(cleaned, 63)
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", out)


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """The controller owner reference to one of our resources (garbage collection, adoption)."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def restricted_security_context() -> dict[str, Any]:
    """A container securityContext admitted by the ``restricted`` Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security_context() -> dict[str, Any]:
    """The pod-level part of the ``restricted`` Pod Security Standard."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
