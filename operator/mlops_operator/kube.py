"""The one Kubernetes client helper of the controllers.

Every controller talks to the API through these few functions (blocking, called from the
controller's worker threads): one process-wide ``ApiClient``; ``create_or_get`` for immutable
children (Jobs, ModelVersions), ``apply`` (server-side apply, field manager ``mlops-operator``)
for children whose desired state changes (Deployments, Services, ConfigMaps, ...); ``patch_status``
for the one status write of a reconcile pass. Children carry owner references built by
:func:`mlops_operator.builders.common.owner_reference`; :func:`owned_by` checks adoption.

Every request of that client is counted in ``mlops_kube_requests_total{verb, resource}`` (the
apiserver's verbs: get, list, create, patch, ...; ``resource`` with its subresource, e.g.
``trainingruns/status``) on the operator's /metrics: what a reconcile pass costs the API server
(kopf's own watches, finalizers and Events use kopf's client and are not in it).

A request the operator's RBAC does not allow raises :class:`Forbidden` (verb, resource,
namespace): the controller turns it into a ``Ready=False/Forbidden`` condition, a Warning Event
and a slow retry. Other 403s (a quota, an admission plugin) stay API errors.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from . import GROUP, VERSION

FIELD_MANAGER = "mlops-operator"
#: (connect, read) seconds of every request: a call never hangs a worker on a dead connection
TIMEOUT = (5.0, 30.0)
_lock = threading.Lock()
_api: Any = None

REQUESTS = Counter(
    "mlops_kube_requests_total",
    "Requests of the operator's Kubernetes client (reconcile passes), by the apiserver's verb "
    "and resource[/subresource]",
    ["verb", "resource"],
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_kind(method: str, url: str) -> tuple[str, str]:
    """``(verb, resource)`` of a request as the apiserver names them (``GET`` of a collection is
    ``list``; ``resource`` carries its subresource: ``trainingruns/status``)."""
    parts = [x for x in urlsplit(url).path.split("/") if x]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # /api/v1/..., /apis/g/v/...
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource (not the namespace object itself)
    resource = "/".join(rest[:1] + rest[2:3])
    verb = _VERBS.get(method.upper()) or ("get" if len(rest) > 1 else "list")
    return verb, resource


def _counted(client: Any) -> Any:
    """Count every request of ``client`` in :data:`REQUESTS`."""
    rest = client.rest_client
    send = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        REQUESTS.labels(*request_kind(method, url)).inc()
        return send(method, url, *args, **kwargs)

    rest.request = request
    return client


def api() -> Any:
    """The process-wide ``kubernetes.client.ApiClient`` (in-cluster config, else kubeconfig)."""
    global _api
    with _lock:
        if _api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
                _api = _counted(client.ApiClient())
            except config.ConfigException:
                _api = _counted(config.new_client_from_config())
        return _api


def is_status(exc: BaseException, *codes: int) -> bool:
    """True when ``exc`` is an API error with one of these HTTP status codes."""
    from kubernetes.client.rest import ApiException

    return isinstance(exc, ApiException) and exc.status in codes


def is_transient(exc: BaseException) -> bool:
    """True when the API server did not answer in time or was unreachable (a timeout, a
    dropped connection) or answered 429/5xx: worth another try, not a traceback."""
    from urllib3.exceptions import HTTPError as TransportError

    return isinstance(exc, TransportError) or is_status(exc, 429, 500, 502, 503, 504)


def error_message(exc: BaseException) -> str:
    """The apiserver's own message of an API error (its Status ``message``), else ``str(exc)``."""
    import json

    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(exc)


class Forbidden(Exception):  # noqa: N818 - named after the HTTP status, like the API's reason
    """The API server refused a request because the operator's role lacks ``verb`` on
    ``resource`` (``plural[.group][/subresource]``) in ``namespace`` ("" = cluster-scoped)."""

    def __init__(self, verb: str, resource: str, namespace: str, message: str) -> None:
        self.verb, self.resource, self.namespace = verb, resource, namespace
        where = f"in namespace {namespace}" if namespace else "cluster-wide"
        super().__init__(f"the operator may not {verb} {resource} {where} (RBAC): {message}")


def allowed(verb: str, group: str, plural: str, namespace: str, subresource: str = "") -> bool:
    """Whether the operator may ``verb`` the resource (a SelfSubjectAccessReview: every
    authenticated user may ask this about itself)."""
    from kubernetes.client import (
        AuthorizationV1Api,
        V1ResourceAttributes,
        V1SelfSubjectAccessReview,
        V1SelfSubjectAccessReviewSpec,
    )

    attributes = V1ResourceAttributes(verb=verb, group=group, resource=plural,
                                      subresource=subresource or None,
                                      namespace=namespace or None)
    review = AuthorizationV1Api(api()).create_self_subject_access_review(
        V1SelfSubjectAccessReview(spec=V1SelfSubjectAccessReviewSpec(
            resource_attributes=attributes)), _request_timeout=TIMEOUT)
    return bool(review.status.allowed)


def _raise_if_forbidden(exc: BaseException, verbs: tuple[str, ...], group: str, plural: str,
                        namespace: str, subresource: str = "") -> None:
    """Raise :class:`Forbidden` from ``exc`` when it is a 403 and RBAC denies one of ``verbs``
    (a server-side apply needs ``patch``, and ``create`` when the object is new)."""
    if not is_status(exc, 403):
        return
    for verb in verbs:
        try:
            ok = allowed(verb, group, plural, namespace, subresource)
        except Exception:  # noqa: BLE001 - cannot tell: the apiserver's 403 stands as it is
            return
        if not ok:
            resource = (f"{plural}.{group}" if group else plural) + (
                f"/{subresource}" if subresource else "")
            raise Forbidden(verb, resource, namespace, error_message(exc)) from exc


def _group(res: Any) -> str:
    return str(getattr(res, "group", "") or "")


def to_dict(obj: Any) -> dict[str, Any]:
    """A kubernetes-client model (or a dict) as the API's camelCase JSON."""
    return dict(api().sanitize_for_serialization(obj))


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has an owner reference to ``uid``."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


_resources: dict[tuple[str, str], Any] = {}


def _dynamic(api_version: str, kind: str) -> Any:
    """The dynamic-client resource of a kind (discovered once, then cached)."""
    key = (api_version, kind)
    found = _resources.get(key)
    if found is None:
        client = api()
        with _lock:
            from kubernetes.dynamic import DynamicClient

            dyn = _resources.get(("", "")) or DynamicClient(client)
            _resources[("", "")] = dyn
            found = _resources[key] = dyn.resources.get(api_version=api_version, kind=kind)
    return found


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as the API has it now, or None."""
    res = _dynamic(api_version, kind)
    try:
        return res.get(name=name, namespace=namespace, _request_timeout=TIMEOUT).to_dict()
    except Exception as exc:
        if is_status(exc, 404):
            return None
        _raise_if_forbidden(exc, ("get",), _group(res), res.name, namespace)
        raise


def list_(api_version: str, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    """Objects of a kind in a namespace matching a label selector."""
    res = _dynamic(api_version, kind)
    try:
        found = res.get(namespace=namespace, label_selector=selector or None,
                        _request_timeout=TIMEOUT)
    except Exception as exc:
        _raise_if_forbidden(exc, ("list",), _group(res), res.name, namespace)
        raise
    return [item.to_dict() for item in found.items]


def create_or_get(manifest: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create ``manifest``; when it exists already (409), read it. ``(object, created)``.

    For children that are never changed after creation (Jobs, ModelVersions): a retry after a
    crash finds what the first attempt made. The caller checks ownership with :func:`owned_by`.
    """
    meta = manifest["metadata"]
    res = _dynamic(manifest["apiVersion"], manifest["kind"])
    try:
        return res.create(body=dict(manifest), namespace=meta["namespace"],
                          field_manager=FIELD_MANAGER, _request_timeout=TIMEOUT).to_dict(), True
    except Exception as exc:
        if not is_status(exc, 409):
            _raise_if_forbidden(exc, ("create",), _group(res), res.name, meta["namespace"])
            raise
    found = get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    if found is None:
        from kopf import TemporaryError

        raise TemporaryError(f"{manifest['kind']} {meta['name']} vanished while created", delay=1)
    return found, False


def apply(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply ``manifest`` as ``mlops-operator`` (create or converge; idempotent)."""
    meta = manifest["metadata"]
    res = _dynamic(manifest["apiVersion"], manifest["kind"])
    try:
        return res.server_side_apply(
            body=dict(manifest), name=meta["name"], namespace=meta["namespace"],
            field_manager=FIELD_MANAGER, force_conflicts=True, _request_timeout=TIMEOUT,
        ).to_dict()
    except Exception as exc:
        _raise_if_forbidden(exc, ("patch", "create"), _group(res), res.name, meta["namespace"])
        raise


def delete(api_version: str, kind: str, namespace: str, name: str) -> bool:
    """Delete (background propagation); False when it was gone already."""
    res = _dynamic(api_version, kind)
    try:
        res.delete(name=name, namespace=namespace, body={"propagationPolicy": "Background"},
                   _request_timeout=TIMEOUT)
        return True
    except Exception as exc:
        if is_status(exc, 404):
            return False
        _raise_if_forbidden(exc, ("delete",), _group(res), res.name, namespace)
        raise


def patch_status(plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict:
    """Merge ``status`` into one of our resources' status subresource; the updated object."""
    from kubernetes.client import CustomObjectsApi

    try:
        return CustomObjectsApi(api()).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": dict(status)},
            _request_timeout=TIMEOUT,
        )
    except Exception as exc:
        _raise_if_forbidden(exc, ("patch",), GROUP, plural, namespace, "status")
        raise


def failed_create(namespace: str, uid: str) -> str | None:
    """The message of the latest ``FailedCreate`` Event of the object ``uid`` (a Job or
    ReplicaSet whose pods the apiserver refused: admission, quota, a missing ServiceAccount)."""
    from kubernetes.client import CoreV1Api

    try:
        events = CoreV1Api(api()).list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={uid},reason=FailedCreate",
            _request_timeout=TIMEOUT).items
    except Exception as exc:
        _raise_if_forbidden(exc, ("list",), "", "events", namespace)
        raise
    if not events:
        return None
    latest = max(events, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return str(latest.message or "FailedCreate")
