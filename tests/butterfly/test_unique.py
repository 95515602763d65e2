"""Distinct-id counting for the demo's consumer: exact, and bounded by the disorder."""
from __future__ import annotations

import random

from fabric.butterfly.unique import UniqueIds


def test_first_deliveries_and_repeats_are_told_apart_in_any_order():
    rng = random.Random(3)
    ids = [(k << 40) | n for k in range(3) for n in range(2000)]
    deliveries = ids + rng.sample(ids, 500)
    rng.shuffle(deliveries)
    tracker = UniqueIds()
    firsts = [ident for ident in deliveries if tracker.add(ident)]
    assert sorted(firsts) == sorted(ids)
    assert tracker.held == 0  # every producer's ids are contiguous again


def test_memory_follows_the_disorder_not_the_count():
    tracker = UniqueIds()
    window = 100
    for start in range(0, 100_000, window):  # each window of ids arrives reversed
        for n in reversed(range(start, start + window)):
            assert tracker.add(n)
        assert tracker.held == 0
    assert not tracker.add(5) and not tracker.add(99_999)
    tracker.add(200_001)  # one missing id (200_000): what is above it is kept
    assert tracker.held == 1
