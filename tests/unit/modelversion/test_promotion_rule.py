"""The concurrency rule: deterministic winner whatever order candidates finish in."""

from __future__ import annotations

import itertools

import pytest

from mlops_operator.validation import Contender, promotion_decision, ranks_above


def test_ranks_by_metric_then_version() -> None:
    assert ranks_above(Contender("2", 0.9), Contender("3", 0.8))
    assert ranks_above(Contender("3", 0.9), Contender("2", 0.9))  # tie → higher version
    assert not ranks_above(Contender("2", 0.9), Contender("3", 0.9))
    assert ranks_above(Contender("2", 0.1), Contender("3", 0.2), "LowerIsBetter")
    assert ranks_above(Contender("2", 0.1), Contender("3", None))
    assert ranks_above(Contender("10", None), Contender("9", None))  # numeric, not lexical


def test_unchanged_holder_moves() -> None:
    d = promotion_decision(Contender("5", 0.5), "champion", Contender("4", 0.9), "4")
    assert d.move and d.reason == "GatesPassed"
    d = promotion_decision(Contender("1", 0.5), "champion", None, None)
    assert d.move


def test_already_holding_is_a_noop() -> None:
    d = promotion_decision(Contender("5", 0.5), "champion", Contender("5", 0.5), "4")
    assert not d.move and d.reason == "AlreadyHoldsAlias"


def test_force_always_moves() -> None:
    d = promotion_decision(Contender("1", 0.1), "champion", Contender("5", 0.9), "3", force=True)
    assert d.move and d.reason == "Rollback"


def test_loses_to_a_better_concurrent_candidate() -> None:
    d = promotion_decision(Contender("6", 0.90), "champion", Contender("7", 0.95), "4")
    assert not d.move and d.reason == "LostToConcurrentCandidate"
    d = promotion_decision(Contender("6", 0.97), "champion", Contender("7", 0.95), "4")
    assert d.move and d.reason == "BeatsConcurrentCandidate"


@pytest.mark.parametrize("metrics", [(0.9, 0.95, 0.93), (0.9, 0.9, 0.9), (0.95, 0.9, 0.95)])
def test_any_finishing_order_ends_on_the_same_winner(metrics: tuple[float, ...]) -> None:
    candidates = [Contender(str(v), m) for v, m in zip((5, 6, 7), metrics, strict=True)]
    expected = max(candidates, key=lambda c: (c.metric, int(c.version)))
    for order in itertools.permutations(candidates):
        holder: Contender | None = Contender("4", 0.5)
        moves = []
        for cand in order:  # all validated against the same baseline "4"
            d = promotion_decision(cand, "champion", holder, "4")
            if d.move:
                holder = cand
                moves.append(cand.version)
        assert holder == expected
        # monotone: every move goes to a strictly higher-ranked version, no flapping back
        ranked = [next(c for c in candidates if c.version == v) for v in moves]
        assert all(ranks_above(b, a) for a, b in itertools.pairwise(ranked))
