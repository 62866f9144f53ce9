"""Traffic splitting math: exact weighted round robin and weighted rendezvous hashing."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_runtime.router.hashing import SmoothWeightedRoundRobin, sticky_choice

KEYS = [f"user-{i}" for i in range(10_000)]


def test_round_robin_10000_requests_at_90_10() -> None:
    rr = SmoothWeightedRoundRobin({"a": 90, "b": 10})
    counts = Counter(rr.next() for _ in range(10_000))
    assert abs(counts["b"] / 10_000 - 0.10) <= 0.01
    assert counts == {"a": 9000, "b": 1000}  # exact, and interleaved:
    first = [rr.next() for _ in range(10)]
    assert first.count("b") == 1


def test_sticky_10000_keys_at_90_10_within_one_point() -> None:
    counts = Counter(sticky_choice(k, {"a": 90, "b": 10}) for k in KEYS)
    assert abs(counts["b"] / len(KEYS) - 0.10) <= 0.01


def test_sticky_is_consistent() -> None:
    weights = {"a": 70, "b": 20, "c": 10}
    first = [sticky_choice(k, weights) for k in KEYS[:2000]]
    again = [sticky_choice(k, dict(reversed(weights.items()))) for k in KEYS[:2000]]
    assert first == again


def test_90_10_to_50_50_moves_exactly_the_keys_that_must_move() -> None:
    before = {k: sticky_choice(k, {"a": 90, "b": 10}) for k in KEYS}
    after = {k: sticky_choice(k, {"a": 50, "b": 50}) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert abs(len(moved) / len(KEYS) - 0.40) <= 0.02
    assert all(before[k] == "a" and after[k] == "b" for k in moved)  # no key goes b → a


def test_zero_weight_gets_nothing_and_all_zero_is_an_error() -> None:
    assert {sticky_choice(k, {"a": 1, "b": 0}) for k in KEYS[:500]} == {"a"}
    with pytest.raises(ValueError):
        sticky_choice("k", {"a": 0})
    with pytest.raises(ValueError):
        SmoothWeightedRoundRobin({"a": 0})


@settings(max_examples=40, deadline=None)
@given(
    weights=st.dictionaries(st.sampled_from("abcde"), st.integers(1, 100), min_size=2),
    grow=st.sampled_from("abcde"),
    extra=st.integers(1, 100),
)
def test_growing_one_weight_only_moves_keys_to_it(weights, grow, extra) -> None:  # noqa: ANN001
    if grow not in weights:
        return
    bigger = {**weights, grow: weights[grow] + extra}
    for key in KEYS[:300]:
        before, after = sticky_choice(key, weights), sticky_choice(key, bigger)
        assert before == after or after == grow


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 50), min_size=1))
def test_round_robin_is_exact_over_a_full_cycle(weights) -> None:  # noqa: ANN001
    total = sum(weights.values())
    if total == 0:
        return
    rr = SmoothWeightedRoundRobin(weights)
    counts = Counter(rr.next() for _ in range(total))
    assert counts == {n: w for n, w in weights.items() if w > 0}
