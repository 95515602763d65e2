"""Membership changes in simulated scenarios, made the way an operator's tool would make them.

A *plan* is a short list of single-server changes: add a learner; add a learner and promote
it; remove a voter (often the leader) or a learner; replace a voter (add a learner, promote it,
remove the old one — often the leader). ``poll()`` runs every few milliseconds of virtual time
and pushes the plan's next step to whoever leads now: a step already in force on the leader is
done; a refused one (no leader yet, a change pending, a learner still catching up, a transfer
under way) is retried at the next poll, and a plan that cannot finish is given up. Faults,
crashes and partitions keep going meanwhile, so changes are lost with their leader, rolled back,
re-proposed and committed by another leader.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Callable

from nameservice.raft.core import RaftCore
from nameservice.raft.errors import RaftError
from nameservice.raft.sim.cluster import SimCluster
from nameservice.raft.types import ChangeKind, ConfChange, ConfState

ADD, PROMOTE, REMOVE = ChangeKind.ADD_LEARNER, ChangeKind.PROMOTE, ChangeKind.REMOVE
MAX_VOTERS = 7
GIVE_UP_AFTER = 100  # polls a step may be refused before its plan is abandoned


def _done(state: ConfState, step: ConfChange) -> bool | None:
    """Whether ``step`` is in force in ``state``; None if it can no longer be made."""
    node = step.node
    if step.kind is ADD:
        return node in state.voters or node in state.learners
    if step.kind is PROMOTE:
        if node in state.voters:
            return True
        return False if node in state.learners else None
    return node not in state.voters and node not in state.learners


class Reconfigurer:
    """Draws membership plans and carries them out on a ``SimCluster`` (see module docstring)."""

    def __init__(self, cluster: SimCluster, rng: random.Random, log: Callable[[str], None]):
        self.cluster = cluster
        self.rng = rng
        self.log = log
        self.plan: deque[ConfChange] = deque()
        self.refusals = 0
        self.proposed = 0
        self.plans = 0

    def poll(self) -> None:
        leader = self.cluster.leader()
        if leader is None:
            return
        core = leader.live_core()
        if not self.plan:
            if self.rng.random() < 0.15:
                self._new_plan(core)
            return
        step = self.plan[0]
        done = _done(core.conf_state, step)
        if done is None:
            self.log(f"membership: give up {list(self.plan)} (a step was rolled back)")
            self.plan.clear()
            return
        if done:
            self.plan.popleft()
            self.refusals = 0
            return
        result: list[str] = []

        def go(core: RaftCore) -> None:
            try:
                index = core.propose_conf_change(step)
            except RaftError as exc:
                result.append(str(exc))
                return
            result.append(f"at index {index}")

        self.cluster.with_core(leader.id, go)
        if result and result[0].startswith("at index"):
            self.proposed += 1
            self.log(f"membership: leader {leader.id} proposes {step.kind.name} {step.node} "
                     f"{result[0]}")
            return
        self.refusals += 1
        if self.refusals >= GIVE_UP_AFTER:
            self.log(f"membership: give up {list(self.plan)}: {result[0] if result else ''}")
            self.plan.clear()
            self.refusals = 0

    def _new_plan(self, core: RaftCore) -> None:
        rng = self.rng
        voters, learners = core.voters, core.learners
        outsiders = [i for i in self.cluster.ids if i not in voters and i not in learners]
        leader = core.id
        others = [v for v in voters if v != leader]

        def old_voter() -> int:
            return leader if not others or rng.random() < 0.4 else rng.choice(others)

        roll = rng.random()
        plan: list[ConfChange] = []
        if roll < 0.3 and outsiders and len(voters) < MAX_VOTERS:
            new = rng.choice(outsiders)
            plan = [ConfChange(ADD, new), ConfChange(PROMOTE, new)]
        elif roll < 0.4 and outsiders:
            plan = [ConfChange(ADD, rng.choice(outsiders))]
        elif roll < 0.6 and len(voters) > 2:
            plan = [ConfChange(REMOVE, old_voter())]
        elif roll < 0.7 and learners:
            plan = [ConfChange(REMOVE, rng.choice(learners))]
        elif outsiders and voters:
            new = rng.choice(outsiders)
            plan = [ConfChange(ADD, new), ConfChange(PROMOTE, new), ConfChange(REMOVE, old_voter())]
        elif learners:
            plan = [ConfChange(PROMOTE, rng.choice(learners))]
        if plan:
            self.plans += 1
            self.plan.extend(plan)
            self.refusals = 0
            described = ", ".join(f"{c.kind.name} {c.node}" for c in plan)
            self.log(f"membership: plan [{described}] (voters {voters}, learners {learners})")
