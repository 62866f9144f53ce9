"""Traffic splitting.

* :func:`sticky_choice` is weighted rendezvous hashing: each (key, variant) pair gets a
  pseudo-random score ``weight / -ln(u)``; the highest wins. A variant then receives a share of
  keys equal to its share of the weight, the same key always lands on the same variant while the
  weights are unchanged, and when weights change a key only moves to a variant whose weight grew
  (from 90/10 to 50/50 exactly the keys that must move, 40 %, move and no others).
* :class:`SmoothWeightedRoundRobin` (nginx's algorithm) splits non-sticky traffic exactly by
  weight with the variants interleaved: 10,000 requests at 90/10 are 9,000 and 1,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from hashlib import blake2b

_SCALE = float(1 << 64)


def _unit(key: bytes, name: bytes) -> float:
    """A uniform pseudo-random number in (0, 1) from the key and the variant name."""
    digest = blake2b(key, digest_size=8, key=name[:64]).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


def sticky_choice(key: str, weights: Mapping[str, float]) -> str:
    """The variant for ``key`` under ``weights`` (weighted rendezvous hashing)."""
    raw = key.encode()
    best_name, best_score = "", -1.0
    for name, weight in weights.items():
        if weight <= 0:
            continue
        score = weight / -math.log(_unit(raw, name.encode()))
        if score > best_score:
            best_name, best_score = name, score
    if not best_name:
        raise ValueError("no variant has a positive weight")
    return best_name


class SmoothWeightedRoundRobin:
    """Deterministic weighted round robin with the variants spread evenly (nginx's SWRR)."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._weights = {n: float(w) for n, w in weights.items() if w > 0}
        if not self._weights:
            raise ValueError("no variant has a positive weight")
        self._total = sum(self._weights.values())
        self._current = dict.fromkeys(self._weights, 0.0)

    def next(self) -> str:
        """The variant for the next request."""
        current = self._current
        best = ""
        best_value = -math.inf
        for name, weight in self._weights.items():
            value = current[name] + weight
            current[name] = value
            if value > best_value:
                best, best_value = name, value
        current[best] -= self._total
        return best
