"""The local stack: a real control plane, a node stand-in, MLflow, Prometheus and Alertmanager."""
