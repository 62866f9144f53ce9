"""The kubelet's gRPC probe: ``grpc.health.v1.Health/Check`` against the pod, as
``k8s.io/kubernetes/pkg/probe/grpc`` does it.

One plaintext connection per attempt to ``<pod IP>:<port>`` (no proxy), the probe's ``service``
(default ``""``) in the request, ``timeoutSeconds`` for the connection and again for the call.
``SERVING`` passes; any other status, a connection that cannot be made, a call that fails or
times out, or a server without the health service fails, with the kubelet's wording.
"""

from __future__ import annotations

# grpcio is imported here only: the node imports this module lazily, on the first gRPC probe.
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

USER_AGENT = "kube-probe/local"


def check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    """One probe attempt; returns (success, message)."""
    target = f"{host}:{port}"
    options = [("grpc.primary_user_agent", USER_AGENT), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False, (f"timeout: failed to connect service {target!r} within "
                           f"{timeout:g}s")
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return False, ("this server does not implement the grpc health protocol "
                               f"(grpc.health.v1.Health): {details}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f"timeout: health rpc did not complete within {timeout:g}s"
            name = code.name if code is not None else "UNKNOWN"
            return False, f"error: health rpc probe failed: {name}: {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        return False, f"service unhealthy (responded with {status!r})"
    return True, ""
