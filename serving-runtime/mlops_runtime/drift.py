"""Feature drift: baseline histograms written by the trainer, PSI over a sliding window.

Baseline format (the MLflow run artifact ``baseline/histograms.json``)::

    {
      "version": 1,
      "n_rows": 150,
      "features": [
        {"name": "sepal length (cm)", "bin_edges": [4.3, 4.66, ..., 7.9], "counts": [9, 19, ...]},
        ...
      ]
    }

``bin_edges`` has ``len(counts) + 1`` increasing values; values outside the outer edges are
counted in the first or last bin, so the baseline and the live window bin identically.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

BASELINE_ARTIFACT = "baseline/histograms.json"
_EPS = 1e-4


def compute_baseline(X: Any, feature_names: Sequence[str] | None = None, bins: int = 10) -> dict:
    """Histograms of each column of ``X`` (2-D array-like), in the baseline format above."""
    data = np.asarray(X, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError("X must be a non-empty 2-D array")
    names = (
        list(feature_names)
        if feature_names is not None
        else [f"f{i}" for i in range(data.shape[1])]
    )
    if len(names) != data.shape[1]:
        raise ValueError("feature_names must have one name per column")
    features = []
    for i, name in enumerate(names):
        column = data[:, i]
        lo, hi = float(np.min(column)), float(np.max(column))
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        counts = _bin_counts(column, edges)
        features.append({"name": str(name), "bin_edges": edges.tolist(), "counts": counts.tolist()})
    return {"version": 1, "n_rows": int(data.shape[0]), "features": features}


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; out-of-range values go to the outer bins."""
    idx = np.searchsorted(edges, values, side="right") - 1
    np.clip(idx, 0, len(edges) - 2, out=idx)
    return np.bincount(idx, minlength=len(edges) - 1).astype(np.int64)


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float]) -> float:
    """Population stability index between two histograms over the same bins.

    ``sum((a - e) * ln(a / e))`` over bin proportions, each floored at a small epsilon.
    0 means identical; > 0.2 is commonly read as significant drift.
    """
    e = np.asarray(expected_counts, dtype=np.float64)
    a = np.asarray(actual_counts, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.maximum(e / e.sum(), _EPS)
    a = np.maximum(a / a.sum(), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def validate_baseline(baseline: Any) -> dict:
    """Check the structure of a baseline document, raising ``ValueError`` if it is wrong."""
    if not isinstance(baseline, dict) or not isinstance(baseline.get("features"), list):
        raise ValueError("baseline must be an object with a 'features' list")
    for f in baseline["features"]:
        edges, counts = f.get("bin_edges"), f.get("counts")
        if not isinstance(f.get("name"), str) or not isinstance(edges, list):
            raise ValueError("each feature needs a 'name' and 'bin_edges'")
        if not isinstance(counts, list) or len(edges) != len(counts) + 1 or len(counts) < 1:
            raise ValueError(f"feature {f.get('name')}: need len(bin_edges) == len(counts) + 1")
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"feature {f['name']}: bin_edges must increase")
    return baseline


class DriftMonitor:
    """Keeps the last ``window`` rows in a ring buffer and scores each feature by PSI.

    ``observe`` is on the hot path and only copies rows; ``scores`` (at scrape time) bins them.
    """

    #: fewer rows than this give no score: PSI over a handful of rows in 10 bins is noise (30
    #: normal rows of a 10 % variant can read above 0.2 and page someone for nothing)
    MIN_ROWS = 100

    def __init__(self, baseline: dict, window: int = 1000, min_rows: int | None = None) -> None:
        validate_baseline(baseline)
        self.min_rows = min(window, self.MIN_ROWS if min_rows is None else min_rows)
        self.names = [f["name"] for f in baseline["features"]]
        self._edges = [np.asarray(f["bin_edges"], dtype=np.float64) for f in baseline["features"]]
        self._expected = [np.asarray(f["counts"], dtype=np.float64) for f in baseline["features"]]
        self._buf = np.zeros((window, len(self.names)), dtype=np.float64)
        self._next = 0
        self._filled = 0
        self._lock = threading.Lock()

    @property
    def window(self) -> int:
        """Capacity of the sliding window in rows."""
        return self._buf.shape[0]

    def observe(self, rows: np.ndarray) -> None:
        """Add rows (2-D, one column per baseline feature) to the window."""
        if rows.ndim != 2 or rows.shape[1] != self._buf.shape[1]:
            return
        if rows.shape[0] >= self.window:
            rows = rows[-self.window :]
        n = rows.shape[0]
        with self._lock:
            end = self._next + n
            if end <= self.window:
                self._buf[self._next : end] = rows
            else:
                first = self.window - self._next
                self._buf[self._next :] = rows[:first]
                self._buf[: n - first] = rows[first:]
            self._next = end % self.window
            self._filled = min(self.window, self._filled + n)

    def scores(self) -> dict[str, float]:
        """PSI per feature over the current window (empty until ``min_rows`` rows were seen)."""
        with self._lock:
            current = self._buf[: self._filled].copy()
        if current.shape[0] == 0 or current.shape[0] < self.min_rows:
            return {}
        return {
            name: psi(expected, _bin_counts(current[:, i], edges))
            for i, (name, edges, expected) in enumerate(
                zip(self.names, self._edges, self._expected, strict=True)
            )
        }
