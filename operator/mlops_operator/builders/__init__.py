"""Pure builders of child objects: spec in, manifest dict out, no I/O (dask-kubernetes style)."""

from .trainingrun import (
    build_job,
    build_labels,
    build_model_version,
    experiment_name,
    job_name,
    model_version_name,
)

__all__ = [
    "build_job",
    "build_labels",
    "build_model_version",
    "experiment_name",
    "job_name",
    "model_version_name",
]
