"""mlops-operator: the ML lifecycle as Kubernetes resources, reconciled by kopf."""

__version__ = "0.1.0"
GROUP = "mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
