"""The ModelDeployment builders: variant Deployments/Services/HPAs, the router's objects, names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mlops_operator.api import ModelDeploymentSpec
from mlops_operator.builders.autoscaling import build_hpa
from mlops_operator.builders.common import restricted_security_context
from mlops_operator.builders.modeldeployment import (
    build_variant_deployment,
    build_variant_service,
    entry_service_name,
    pod_from_template,
    router_name,
    variant_name,
)
from mlops_operator.builders.router import (
    build_router_deployment,
    build_router_rbac,
    build_router_service,
)
from mlops_runtime.router.settings import RouterSettings
from mlops_runtime.settings import RuntimeSettings

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "iris" / "modeldeployment.yaml"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
IMAGE = "default/runtime:1"
TRACKING = "http://mlflow:5000"


def example_spec(**changes: Any) -> ModelDeploymentSpec:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return ModelDeploymentSpec.model_validate(spec)


def deployment(
    spec: ModelDeploymentSpec | None = None,
    variant: str = "champion",
    version: str = "3",
    **kw: Any,
) -> dict[str, Any]:
    return build_variant_deployment(
        "iris",
        "ml",
        "uid-1",
        spec or example_spec(),
        variant,
        version,
        tracking_uri=TRACKING,
        default_image=IMAGE,
        **kw,
    )


def container_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_of(manifest)["env"]}


def plain_env(manifest: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in env_of(manifest).items() if isinstance(v, str)}


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("md", "variant", "role", "expected"),
    [
        ("iris", "champion", "stable", "iris-champion"),
        ("iris", "champion", "canary", "iris-champion-canary"),
        ("iris.prod", "a", "stable", "iris-prod-a"),  # Services take no dots
        ("3d-model", "a", "stable", "x-3d-model-a"),  # nor a leading digit
    ],
)
def test_variant_names(md: str, variant: str, role: str, expected: str) -> None:
    assert variant_name(md, variant, role) == expected  # type: ignore[arg-type]


def test_router_and_entry_names() -> None:
    assert router_name("iris") == "iris-router"
    assert entry_service_name("iris") == "iris"


@given(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,250}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["stable", "canary"]),
)
def test_names_are_short_deterministic_service_names(md: str, variant: str, role: str) -> None:
    for name in (variant_name(md, variant, role), router_name(md), entry_service_name(md)):  # type: ignore[arg-type]
        assert len(name) <= 63 and DNS_1035.match(name), name
    assert variant_name(md, variant, role) == variant_name(md, variant, role)  # type: ignore[arg-type]


def test_long_names_stay_distinct_and_roles_never_share_a_name() -> None:
    a, b = "m" * 80 + "a", "m" * 80 + "b"
    assert variant_name(a, "champion") != variant_name(b, "champion")
    assert variant_name(a, "champion") != variant_name(a, "champion", "canary")
    assert variant_name(a, "champion", "canary").endswith("-champion-canary")


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        variant_name("iris", "champion", "blue")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["champion-canary", "router"])
def test_variant_names_that_would_clash_with_other_children_are_refused(bad: str) -> None:
    """``<md>-router`` and ``<md>-<variant>-canary`` are taken: the API refuses such variants."""
    with pytest.raises(ValueError, match="must not be called router or end in -canary"):
        example_spec(variants=[
            {"name": "champion", "modelUri": "models:/iris@champion", "weight": 100},
            {"name": bad, "modelUri": "models:/iris@champion", "weight": 0},
        ])


# -- the variant Deployment --------------------------------------------------------------------


def test_deployment_pins_the_version_and_configures_the_runtime() -> None:
    manifest = deployment()
    assert manifest["apiVersion"] == "apps/v1" and manifest["kind"] == "Deployment"
    assert manifest["metadata"]["name"] == "iris-champion"
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["metadata"]["annotations"]["mlops.dev/model-uri"] == "models:/iris/3"
    env = env_of(manifest)
    assert env["MLOPS_RUNTIME_MODEL_URI"] == "models:/iris/3"
    assert env["MLOPS_RUNTIME_MODEL_NAME"] == "iris"
    assert env["MLOPS_RUNTIME_VARIANT"] == "champion"
    assert env["MLOPS_RUNTIME_PORT"] == "8080"
    assert env["MLOPS_RUNTIME_GRPC_PORT"] == "8081"
    assert env["MLOPS_RUNTIME_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["MLFLOW_TRACKING_URI"] == TRACKING
    container = container_of(manifest)
    assert container["command"] == ["mlops-runtime", "serve"]
    assert container["image"] == "ghcr.io/mlops-operator/mlops-runtime:0.1.0"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "grpc", "containerPort": 8081, "protocol": "TCP"}]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert manifest["spec"]["replicas"] == 2


def test_the_runtime_reads_exactly_the_env_the_builder_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in plain_env(deployment(version="7")).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_RUNTIME_HOST", "10.0.0.5")  # what the downward API gives
    settings = RuntimeSettings()
    assert settings.model_uri == "models:/iris/7"
    assert settings.model_name == "iris"
    assert settings.variant == "champion"
    assert (settings.host, settings.port, settings.grpc_port) == ("10.0.0.5", 8080, 8081)


def test_probes_security_and_graceful_termination() -> None:
    manifest = deployment()
    pod = manifest["spec"]["template"]["spec"]
    container = container_of(manifest)
    assert container["readinessProbe"]["grpc"] == {"port": 8081, "service": ""}  # the server
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["securityContext"] == restricted_security_context()
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < pod["terminationGracePeriodSeconds"]
    assert manifest["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_scrape_annotations_follow_the_port() -> None:
    manifest = deployment(example_spec(runtime={"port": 9000}))
    assert manifest["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9000",
        "prometheus.io/path": "/metrics",
    }
    assert container_of(manifest)["ports"][0]["containerPort"] == 9000


@pytest.mark.parametrize(
    ("role", "version", "name"),
    [("stable", "3", "iris-champion"), ("canary", "4", "iris-champion-canary")],
)
def test_labels_and_selector_per_role(role: str, version: str, name: str) -> None:
    manifest = deployment(version=version, role=role)
    assert manifest["metadata"]["name"] == name
    selector = manifest["spec"]["selector"]["matchLabels"]
    assert selector == {
        "mlops.dev/deployment": "iris",
        "mlops.dev/variant": "champion",
        "mlops.dev/role": role,
        "app.kubernetes.io/component": "model-server",
    }
    assert "mlops.dev/version" not in selector  # selectors are immutable, versions change
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == manifest["metadata"]["labels"]
    assert pod_labels.items() >= selector.items()
    assert pod_labels["mlops.dev/version"] == version
    assert pod_labels["app.kubernetes.io/managed-by"] == "mlops-operator"
    assert pod_labels["mlops.dev/model"] == "iris"
    assert not [k for k in pod_labels if k.startswith("argocd.argoproj.io")]
    # the canary labels its metrics with the variant's own name; the version tells them apart
    assert env_of(manifest)["MLOPS_RUNTIME_VARIANT"] == "champion"


def test_owner_reference_is_the_modeldeployment() -> None:
    for manifest in (
        deployment(),
        build_variant_service("iris", "ml", "uid-1", example_spec(), "champion"),
    ):
        assert manifest["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mlops.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "iris",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


@pytest.mark.parametrize(
    ("autoscaling", "replicas_arg", "expected"),
    [
        (None, None, 1),  # challenger: variants[].replicas
        (None, 3, 3),  # the controller's count (e.g. a canary's)
        ({"maxReplicas": 4, "targetCPUUtilizationPercentage": 70}, None, "absent"),
        ({"maxReplicas": 4, "targetCPUUtilizationPercentage": 70}, 3, "absent"),
    ],
)
def test_replicas_are_left_to_the_hpa_when_autoscaling(
    autoscaling: dict | None, replicas_arg: int | None, expected: int | str
) -> None:
    spec = example_spec(runtime={"autoscaling": autoscaling})
    manifest = deployment(spec, variant="challenger", replicas=replicas_arg)
    assert manifest["spec"].get("replicas", "absent") == expected


def test_user_env_cannot_override_the_pinned_model_but_can_the_host_and_tracking_uri() -> None:
    spec = example_spec(
        runtime={
            "env": [
                {"name": "MLOPS_RUNTIME_MODEL_URI", "value": "models:/iris@champion"},
                {"name": "MLOPS_RUNTIME_VARIANT", "value": "other"},
                {"name": "MLOPS_RUNTIME_HOST", "value": "0.0.0.0"},
                {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlops:5000"},
                {"name": "EXTRA", "value": "1"},
            ],
            "envFrom": [{"secretRef": {"name": "s3"}}],
        }
    )
    manifest = deployment(spec)
    names = [e["name"] for e in container_of(manifest)["env"]]
    assert len(names) == len(set(names))
    env = env_of(manifest)
    assert env["MLOPS_RUNTIME_MODEL_URI"] == "models:/iris/3"
    assert env["MLOPS_RUNTIME_VARIANT"] == "champion"
    assert env["MLOPS_RUNTIME_HOST"] == "0.0.0.0"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert env["EXTRA"] == "1"
    assert container_of(manifest)["envFrom"] == [{"secretRef": {"name": "s3"}}]


@pytest.mark.parametrize(
    ("image", "expected"), [(None, IMAGE), ("mine:2", "mine:2")], ids=["default", "spec"]
)
def test_image_defaults_to_the_operators_runtime_image(image: str | None, expected: str) -> None:
    assert container_of(deployment(example_spec(runtime={"image": image})))["image"] == expected


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="no variant 'nope'"):
        deployment(variant="nope")


# -- Services ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["stable", "canary"])
def test_variant_service_selects_one_role_of_one_variant(role: str) -> None:
    svc = build_variant_service("iris", "ml", "uid-1", example_spec(), "challenger", role)  # type: ignore[arg-type]
    dep = deployment(variant="challenger", role=role)
    assert svc["metadata"]["name"] == dep["metadata"]["name"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "kubernetes.io/h2c"},
    ]
    assert svc["metadata"]["labels"]["mlops.dev/variant"] == "challenger"


# -- HPA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("autoscaling", "metrics"),
    [
        (
            {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
            [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        ),
        (
            {"minReplicas": 1, "maxReplicas": 5, "targetRequestsPerSecond": 12.5},
            [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "mlops_runtime_requests_per_second"},
                        "target": {"type": "AverageValue", "averageValue": "12500m"},
                    },
                }
            ],
        ),
    ],
)
def test_hpa_per_variant_deployment(autoscaling: dict, metrics: list) -> None:
    spec = example_spec(runtime={"autoscaling": autoscaling})
    for role in ("stable", "canary"):
        hpa = build_hpa("iris", "ml", "uid-1", spec, "champion", role)  # type: ignore[arg-type]
        assert hpa is not None
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["metadata"]["name"] == variant_name("iris", "champion", role)  # type: ignore[arg-type]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": variant_name("iris", "champion", role),  # type: ignore[arg-type]
        }
        assert hpa["spec"]["minReplicas"] == max(1, autoscaling["minReplicas"])
        assert hpa["spec"]["maxReplicas"] == 5
        assert hpa["spec"]["metrics"] == metrics


def test_no_hpa_without_autoscaling() -> None:
    assert build_hpa("iris", "ml", "u", example_spec(), "champion") is None


# -- router ------------------------------------------------------------------------------------


def router() -> dict[str, Any]:
    return build_router_deployment("iris", "ml", "uid-1", example_spec(), default_image=IMAGE)


def test_router_deployment_reads_its_configmap(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = router()
    assert manifest["metadata"]["name"] == "iris-router"
    container = container_of(manifest)
    assert container["command"] == ["mlops-runtime", "router"]
    env = env_of(manifest)
    assert env["MLOPS_ROUTER_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["MLOPS_ROUTER_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for name, value in plain_env(manifest).items():
        monkeypatch.setenv(name, value)
    settings = RouterSettings()
    assert settings.configmap == "ml/iris-router"
    assert settings.configmap_key == "router.yaml"
    assert settings.port == 8080 and settings.config is None
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "iris-router"
    assert container["securityContext"] == restricted_security_context()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/router/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/router/healthz"
    assert manifest["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"


def test_router_service_selects_only_the_router() -> None:
    svc = build_router_service("iris", "ml", "uid-1", example_spec())
    assert svc["metadata"]["name"] == "iris"
    assert svc["spec"]["selector"] == router()["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "router"


def test_router_rbac_grants_what_the_router_reads() -> None:
    sa, role, binding = build_router_rbac("iris", "ml", "uid-1", example_spec())
    assert [o["kind"] for o in (sa, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    assert {o["metadata"]["name"] for o in (sa, role, binding)} == {"iris-router"}
    grants = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert grants == {
        ("", "configmaps", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("", "services", "get"),
        ("", "pods", "list"),
    }
    assert role["rules"][0]["resourceNames"] == ["iris-router"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "iris-router", "namespace": "ml"}
    ]
    assert binding["roleRef"]["name"] == "iris-router"


def test_pod_from_template_keeps_the_pod_spec() -> None:
    dep = deployment()
    pod = pod_from_template(dep, "probe")
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "probe"
    assert pod["spec"] == dep["spec"]["template"]["spec"]
    assert pod["metadata"]["labels"] == dep["spec"]["template"]["metadata"]["labels"]


@given(st.text(min_size=1, max_size=80))
def test_version_label_is_always_valid(version: str) -> None:
    labels = deployment(version=version)["spec"]["template"]["metadata"]["labels"]
    assert LABEL_VALUE.match(labels["mlops.dev/version"])
