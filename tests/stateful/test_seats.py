"""The leader's plan for its group's seats: one change at a time, never fewer live voters."""
from __future__ import annotations

from fabric.stateful.seats import Seats, plan, preferred_leader
from nameservice.raft.types import ChangeKind, ConfChange, ConfState

ADD, PROMOTE, REMOVE = ChangeKind.ADD_LEARNER, ChangeKind.PROMOTE, ChangeKind.REMOVE


def seats(voters, learners=(), registered=(), gone_for=None, caught_up=(), me=1, size=3):
    return Seats(me=me, size=size, conf=ConfState(tuple(voters), tuple(learners)),
                 registered=frozenset(registered), gone_for=gone_for or {},
                 caught_up=frozenset(caught_up))


def test_a_founder_adds_the_replicas_that_register_and_promotes_them_once_caught_up():
    assert plan(seats([1], registered=[1, 2, 3])) == ConfChange(ADD, 2)
    assert plan(seats([1], [2], registered=[1, 2, 3])) == ConfChange(ADD, 3)
    assert plan(seats([1], [2, 3], registered=[1, 2, 3])) is None  # neither caught up yet
    assert plan(seats([1], [2, 3], registered=[1, 2, 3], caught_up=[3])) == ConfChange(PROMOTE, 3)
    assert plan(seats([1, 2, 3], registered=[1, 2, 3])) is None


def test_a_lost_voter_is_replaced_first_then_removed():
    gone = {3: 60.0}
    # Gone, and nobody to replace it: it keeps its seat (the group still has a majority).
    assert plan(seats([1, 2, 3], registered=[1, 2], gone_for=gone)) is None
    # A new replica registers: added, promoted once caught up, then the lost one removed.
    assert plan(seats([1, 2, 3], registered=[1, 2, 4], gone_for=gone)) == ConfChange(ADD, 4)
    assert plan(seats([1, 2, 3], [4], registered=[1, 2, 4], gone_for=gone,
                      caught_up=[4])) == ConfChange(PROMOTE, 4)
    assert plan(seats([1, 2, 3, 4], registered=[1, 2, 4],
                      gone_for=gone)) == ConfChange(REMOVE, 3)


def test_a_voter_gone_for_less_than_the_grace_keeps_its_seat():
    assert plan(seats([1, 2, 3], registered=[1, 2], gone_for={3: 2.0}), 10.0) is None
    # One voter too many (a replacement promoted, then the lost one came back): the one not
    # registered goes first.
    assert plan(seats([1, 2, 3, 4], registered=[1, 2, 4], gone_for={3: 2.0}),
                10.0) == ConfChange(REMOVE, 3)


def test_a_lost_learner_is_removed_after_the_grace():
    assert plan(seats([1, 2, 3], [5], registered=[1, 2, 3],
                      gone_for={5: 11.0}), 10.0) == ConfChange(REMOVE, 5)


def test_a_voter_beyond_the_size_is_removed_but_never_the_leader():
    assert plan(seats([1, 2, 3, 4], registered=[1, 2, 3, 4], me=4)) == ConfChange(REMOVE, 3)


def test_learners_are_added_only_up_to_the_size():
    assert plan(seats([1, 2, 3], [4, 5, 6], registered=[1, 2, 3, 4, 5, 6, 7])) is None


def test_partitions_prefer_leaders_in_different_processes():
    processes = {11: "b", 12: "a", 13: "c", 14: "a"}  # replica id -> process token
    assert [preferred_leader(p, processes) for p in range(4)] == [12, 11, 13, 12]
    assert preferred_leader(0, {}) is None


def test_a_voter_restarting_within_the_grace_keeps_its_seat_from_a_waiting_learner():
    restarting = seats([1, 2, 3], [4], registered=[1, 2, 4], gone_for={3: 2.0}, caught_up=[4])
    assert plan(restarting, 10.0) is None
    assert plan(seats([1, 2, 3], [4], registered=[1, 2, 4], gone_for={3: 11.0},
                      caught_up=[4]), 10.0) == ConfChange(PROMOTE, 4)
