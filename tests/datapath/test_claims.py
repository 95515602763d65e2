"""Claim rounds as the intermediary keeps them: who is waited for, and when the producer hears."""
from __future__ import annotations

import pytest

from fabric.intermediary.claims import Answer, ClaimRounds

P1, P2 = b"p" * 16, b"q" * 16
C1, C2 = b"C1", b"C2"


def test_the_producer_is_answered_once_every_consumer_asked_has_answered():
    rounds = ClaimRounds()
    assert rounds.open(P1, 7, {C1, C2}, missed=False) is None
    assert rounds.answered(P1, 7, C1) is None
    assert rounds.answered(P1, 7, C2) == Answer(P1, 7, unanswered=False)
    assert len(rounds) == 0


def test_a_round_with_no_consumer_is_answered_at_once():
    assert ClaimRounds().open(P1, 1, set(), missed=False) == Answer(P1, 1, unanswered=False)


def test_a_consumer_that_could_not_be_asked_makes_the_answer_unanswered():
    rounds = ClaimRounds()
    rounds.open(P1, 1, {C1}, missed=True)
    assert rounds.answered(P1, 1, C1) == Answer(P1, 1, unanswered=True)


def test_a_consumer_that_leaves_ends_only_the_rounds_it_was_the_last_of():
    rounds = ClaimRounds()
    rounds.open(P1, 1, {C1}, missed=False)
    rounds.open(P2, 1, {C1, C2}, missed=False)
    assert rounds.leave(C1) == [Answer(P1, 1, unanswered=True)]
    assert rounds.answered(P2, 1, C2) == Answer(P2, 1, unanswered=True)
    assert rounds.leave(C1) == []


def test_an_answer_nobody_waits_for_is_refused():
    rounds = ClaimRounds()
    rounds.open(P1, 1, {C1}, missed=False)
    with pytest.raises(KeyError):
        rounds.answered(P1, 1, C2)  # not asked
    with pytest.raises(KeyError):
        rounds.answered(P1, 2, C1)  # no such round
    with pytest.raises(KeyError):
        rounds.answered(P2, 1, C1)  # another producer's round number
    assert rounds.answered(P1, 1, C1) == Answer(P1, 1, unanswered=False)
    with pytest.raises(KeyError):
        rounds.answered(P1, 1, C1)  # twice


def test_asking_again_in_an_open_round_waits_for_the_new_consumers_too():
    rounds = ClaimRounds()
    rounds.open(P1, 3, {C1}, missed=False)
    assert rounds.open(P1, 3, {C2}, missed=False) is None
    assert rounds.answered(P1, 3, C1) is None
    assert rounds.answered(P1, 3, C2) == Answer(P1, 3, unanswered=False)


def test_rounds_are_bounded():
    rounds = ClaimRounds(limit=2)
    rounds.open(P1, 1, {C1}, missed=False)
    rounds.open(P1, 2, {C1}, missed=False)
    assert rounds.full(P1, 3)
    assert not rounds.full(P1, 2)  # an open round can still be asked again
    rounds.clear()
    assert len(rounds) == 0 and not rounds.full(P1, 3)
