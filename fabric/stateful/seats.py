"""Who sits in a replica group: the leader's plan for its configuration (pure, no I/O).

A replica group keeps ``size`` voters. Replicas are known by a node id made once per data
directory and never reused for another disk: a replica restarted with its disk comes back
as itself, one started on an empty disk (another host, a lost disk) is a new member. So a
replica that lost its disk can never vote twice in one term, the mistake a reused id allows.

The leader compares the configuration with the replicas registered in the name service and
makes at most one single-server change at a time (the Raft core allows no other):

1. a registered replica that is not a member is added as a learner (at most ``size``
   learners): it receives the log (a snapshot stream first, if it is far behind);
2. while fewer than ``size`` voters are alive (registered, or gone for less than
   ``grace_s``: restarting), a learner that is caught up is promoted;
3. a member gone (not registered) for ``grace_s`` is removed: a learner at once, a voter
   only while ``size`` live voters remain without it. So a lost voter is replaced first (a
   learner promoted), then removed, and the group never has fewer live voters than before;
   with no replacement it stays a member, and takes its seat back when it returns;
4. a voter beyond ``size`` is removed (one not registered now first), never the leader
   itself.

``plan`` returns the change to propose now, or None.

Leaders are spread too: when one process runs replicas of several partitions, each group's
leaders would otherwise gather wherever the groups were founded (all in the first process
started). ``preferred_leader`` names, for partition P, the replica in the P-th process (in the
order of their tokens) that hosts P; the leader hands over to it once it is a caught-up voter.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nameservice.raft.types import ChangeKind, ConfChange, ConfState

__all__ = ["GRACE_S", "Seats", "plan", "preferred_leader"]

GRACE_S = 10.0
"""How long a member may stay unregistered (restarting, cut off) before it is removed."""


@dataclass(frozen=True, slots=True)
class Seats:
    """What the leader knows when it plans: the configuration, who is registered, since when
    each member has been gone, and how far each learner's log matches the leader's."""

    me: int
    size: int
    conf: ConfState
    registered: frozenset[int]
    gone_for: Mapping[int, float]  # member -> seconds since it was last registered
    caught_up: frozenset[int]  # learners close enough to the leader's log to be promoted


def plan(seats: Seats, grace_s: float = GRACE_S) -> ConfChange | None:
    """The next configuration change (see module docstring), or None."""
    voters, learners = set(seats.conf.voters), set(seats.conf.learners)
    members = voters | learners
    alive = seats.registered | {seats.me}

    def gone(node: int) -> bool:
        return node not in alive and seats.gone_for.get(node, 0.0) >= grace_s

    # A voter unregistered for less than the grace (restarting with its disk) still counts.
    live_voters = {node for node in voters if not gone(node)}

    for node in sorted(seats.registered - members):
        if len(learners) < seats.size:
            return ConfChange(ChangeKind.ADD_LEARNER, node)
    if len(live_voters) < seats.size:
        for node in sorted(learners & seats.caught_up & alive):
            return ConfChange(ChangeKind.PROMOTE, node)
    for node in sorted(learners):
        if gone(node):
            return ConfChange(ChangeKind.REMOVE, node)
    for node in sorted(voters):
        if gone(node) and len(live_voters) >= seats.size:
            return ConfChange(ChangeKind.REMOVE, node)
    if len(live_voters) > seats.size:  # the one not registered now first, then the newest
        for node in sorted(live_voters - {seats.me}, key=lambda n: (n in alive, -n)):
            return ConfChange(ChangeKind.REMOVE, node)
    return None


def preferred_leader(partition: int, processes: Mapping[int, str]) -> int | None:
    """The replica that should lead ``partition``: among ``processes`` (replica id -> the token
    of the process it runs in), the one in process number ``partition`` modulo their count,
    processes ordered by token (None: no replica registered)."""
    tokens = sorted(set(processes.values()))
    if not tokens:
        return None
    token = tokens[partition % len(tokens)]
    return min(node for node, t in processes.items() if t == token)
