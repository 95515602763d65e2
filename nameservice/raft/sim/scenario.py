"""Random fault scenarios for the Raft simulator, each fully determined by its seed.

A scenario picks a cluster size (3 or 5), a network (delay spread, loss, duplication), disk
speeds and compaction, then for a few virtual seconds mixes client writes, ReadIndex reads and
leadership transfers with faults: symmetric and one-way partitions, crashes (also mid-write,
leaving a torn tail), restarts, slow disks. A fraction of the scenarios (``MEMBERSHIP_SHARE``)
also has one or two spare nodes and changes the membership throughout (``reconfig.py``):
learners added and promoted, voters and learners removed, voters replaced, the leader among
them. The safety checker runs throughout. At the end every fault is repaired and the cluster
must elect a leader, commit a fresh write and apply it on every member of its configuration
within a deadline (liveness).

Each node applies its committed entries to a state machine of its own, a hash chain unless
``run_scenario`` is given a ``machine`` factory; ``write`` gives the data of the client writes
(the default is a unique string per write).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from nameservice.raft.core import RaftCore
from nameservice.raft.errors import RaftError
from nameservice.raft.sim.checker import SafetyChecker
from nameservice.raft.sim.cluster import SimCluster, SimNode, StateMachine, default_config
from nameservice.raft.sim.network import NetworkModel
from nameservice.raft.sim.reconfig import Reconfigurer
from nameservice.raft.types import Entry, ReadState

MS = 1_000
MEMBERSHIP_SHARE = 0.5
"""The share of scenarios that change the membership (drawn from the seed)."""


class LivenessFailure(AssertionError):
    """The repaired cluster did not commit a write in time."""


@dataclass
class ScenarioResult:
    seed: int
    size: int
    committed: int
    acknowledged: int
    reads: int
    leaders: int
    messages: int
    conf_changes: int = 0  # configuration entries committed
    snapshots_installed: int = 0  # snapshots sent by a leader and installed
    faults: list[str] = field(default_factory=list)


def replay_command(seed: int) -> str:
    return f"python -m nameservice.raft.sim --seed {seed}"


def run_scenario(
    seed: int,
    duration_ms: int = 3_000,
    verbose: bool = False,
    *,
    machine: Callable[[int], StateMachine] | None = None,
    write: Callable[[], bytes] | None = None,
) -> ScenarioResult:
    """Run scenario ``seed``; raises SafetyViolation or LivenessFailure on a bug.

    ``machine(node_id)`` makes a node's state machine (at start and after each crash);
    ``write()`` the data of one client write. Neither draws from the scenario's randomness,
    so a seed runs the same faults whatever they are.
    """
    rng = random.Random(seed)
    # Membership draws come from a stream of their own: a scenario without membership changes
    # is exactly what it was before they existed.
    member_rng = random.Random(f"membership-{seed}")
    membership = member_rng.random() < MEMBERSHIP_SHARE
    spares = member_rng.choice((1, 2)) if membership else 0
    size = rng.choice((3, 5))
    model = NetworkModel(
        delay_min=rng.choice((100, 500, 1_000)),
        delay_max=rng.choice((2_000, 5_000, 15_000)),
        drop=rng.choice((0.0, 0.0, 0.02, 0.1)),
        duplicate=rng.choice((0.0, 0.02, 0.1)),
    )
    config = default_config(
        election_timeout_min=10,
        election_timeout_max=20,
        heartbeat_interval=rng.choice((1, 2, 3)),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        split_vote_backoff=rng.random() < 0.5,
        max_entries_per_message=rng.choice((1, 4, 64)),
        max_inflight_messages=rng.choice((1, 4, 64)),
    )
    cluster = SimCluster(
        size, rng.randrange(1 << 30), config, model, tick_us=10 * MS,
        snapshot_every=rng.choice((0, 5, 20, 100)), spares=spares, machine=machine,
    )
    cluster.torn_writes = rng.random() < 0.5
    # Leader churn: some scenarios crash a leader moments after it proposes, and bring it back
    # soon after, so entries of old terms are often left on part of the cluster (the pattern
    # of the Raft paper's Figure 8).
    churn = rng.choice((0.0, 0.3, 0.6))
    end = duration_ms * MS
    result = ScenarioResult(seed, size, 0, 0, 0, 0, 0)
    checker = cluster.checker
    assert checker is not None  # the cluster checks by default
    pending: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) proposed, not yet acked
    reads: dict[bytes, int] = {}  # ctx -> acknowledged index when the read was asked
    counter = [0]

    def log(text: str) -> None:
        result.faults.append(f"{cluster.now / MS:9.1f} ms  {text}")
        if verbose:
            print(result.faults[-1])

    def on_apply(node: SimNode, entry: Entry) -> None:
        want = pending.get(entry.index)
        if (
            want is not None
            and want == (entry.term, entry.data)
            and node.live_core().role.value == "leader"
        ):
            del pending[entry.index]
            checker.on_acknowledged(entry.index, entry.term, entry.data)
            result.acknowledged += 1

    def on_read(node: SimNode, read_state: ReadState) -> None:
        needed = reads.pop(read_state.ctx, None)
        if needed is not None:
            checker.on_read(node.id, read_state.index, needed)
            result.reads += 1

    cluster.on_apply = on_apply
    cluster.on_read = on_read

    def propose() -> None:
        leader = cluster.leader()
        if leader is None:
            return
        count = rng.choice((1, 1, 3, 20))
        datas = []
        for _ in range(count):
            counter[0] += 1
            datas.append(b"w%d" % counter[0] if write is None else write())

        def go(core: RaftCore) -> None:
            try:
                last = core.propose_batch(datas)
            except RaftError:
                return
            for offset, data in enumerate(datas):
                pending[last - count + 1 + offset] = (core.term, data)

        cluster.with_core(leader.id, go)
        if churn and rng.random() < churn and len([n for n in cluster.nodes.values() if n.up]) > 1:
            victim = leader.id
            crash_at = cluster.now + rng.randint(100, 5 * MS)
            cluster.call_at(crash_at, lambda: _churn_crash(victim))

    def _churn_crash(victim: int) -> None:
        if cluster.nodes[victim].up and cluster.now < end:
            cluster.crash_during_write(victim)
            log(f"churn: crash leader {victim}")
            restart_at = cluster.now + rng.randint(20 * MS, 200 * MS)
            cluster.call_at(restart_at, lambda: _churn_restart(victim))

    def _churn_restart(victim: int) -> None:
        if not cluster.nodes[victim].up and cluster.now < end:
            cluster.start(victim)
            log(f"churn: restart {victim}")

    def read() -> None:
        node = rng.choice(cluster.ids)
        counter[0] += 1
        ctx = b"r%d" % counter[0]

        def go(core: RaftCore) -> None:
            if core.read_index(ctx):
                reads[ctx] = checker.max_acked

        cluster.with_core(node, go)

    def fault() -> None:
        roll = rng.random()
        up = [i for i in cluster.ids if cluster.nodes[i].up]
        down = [i for i in cluster.ids if not cluster.nodes[i].up]
        if roll < 0.2:
            ids = list(cluster.ids)
            rng.shuffle(ids)
            cut = rng.randint(1, size - 1)
            groups = [set(ids[:cut]), set(ids[cut:])]
            cluster.net.partition(groups)
            log(f"partition {sorted(groups[0])} | {sorted(groups[1])}")
        elif roll < 0.3:
            a, b = rng.sample(cluster.ids, 2)
            cluster.net.cut_one_way(a, b)
            log(f"cut {a} -> {b}")
        elif roll < 0.45:
            cluster.net.heal()
            log("heal network")
        elif roll < 0.6 and len(up) > 1:
            victim = rng.choice(up)
            leader = cluster.leader()
            if leader is not None and rng.random() < 0.5:
                victim = leader.id
            cluster.crash_during_write(victim)
            log(f"crash {victim}")
        elif roll < 0.75 and down:
            node = rng.choice(down)
            cluster.start(node)
            log(f"restart {node}")
        elif roll < 0.85:
            node = rng.choice(cluster.ids)
            cluster.nodes[node].disk_delay_us = rng.choice((0, 0, 2 * MS, 20 * MS))
            log(f"disk delay of {node} = {cluster.nodes[node].disk_delay_us} us")
        else:
            leader = cluster.leader()
            if leader is not None:
                voters = leader.live_core().voters
                others = [i for i in cluster.ids if i != leader.id and i in voters]
                if others:
                    to = rng.choice(others)
                    cluster.with_core(leader.id, lambda core: core.transfer_leadership(to))
                    log(f"transfer leadership {leader.id} -> {to}")

    t = 0
    while True:
        t += rng.randint(1 * MS, 30 * MS)
        if t >= end:
            break
        roll = rng.random()
        action = propose if roll < 0.6 else read if roll < 0.85 else fault
        cluster.call_at(t, action)
    if membership:
        reconfigurer = Reconfigurer(cluster, member_rng, log)
        for at in range(10 * MS, end, 10 * MS):
            cluster.call_at(at, reconfigurer.poll)
    cluster.run_until(end)

    # Repair everything, then demand progress.
    cluster.net.heal()
    cluster.net.model.drop = 0.0
    for node in cluster.nodes.values():
        node.disk_delay_us = 0
        if not node.up:
            cluster.start(node.id)
    log("repair: heal, restart all, no loss")
    marker = b"final-%d" % counter[0] if write is None else write()
    _check_liveness(cluster, marker, pending, checker)
    result.committed = checker.max_committed
    result.conf_changes = len(checker.conf_indexes)
    result.leaders = len(checker.leader_of_term)
    result.messages = cluster.messages_sent
    result.snapshots_installed = cluster.snapshots_installed
    return result


def _check_liveness(
    cluster: SimCluster,
    marker: bytes,
    pending: dict[int, tuple[int, bytes]],
    checker: SafetyChecker,
) -> None:
    deadline = cluster.now + 10_000 * MS
    proposal: list[tuple[int, int]] = []  # (index, term) of the marker's latest proposal

    def try_propose() -> None:
        leader = cluster.leader()
        if leader is None:
            return

        def go(core: RaftCore) -> None:
            try:
                index = core.propose(marker)
            except RaftError:
                return
            pending[index] = (core.term, marker)
            proposal[:] = [(index, core.term)]

        cluster.with_core(leader.id, go)

    def all_applied() -> bool:
        if not proposal:
            try_propose()
            return False
        index, term = proposal[0]
        leader = cluster.leader()
        if checker.acked.get(index) == (term, marker):
            if leader is None:
                return False
            # Every member of the configuration in force; removed nodes may lag for ever.
            state = leader.live_core().conf_state
            members = state.voters + state.learners
            return all(cluster.nodes[i].sm_index >= index for i in members)
        if leader is not None and leader.live_core().term != term:
            # Proposed but lost with its leader: propose again to the new one.
            pending.pop(index, None)
            proposal.clear()
        return False

    step = 10 * MS
    while cluster.now < deadline:
        if cluster.run_until(cluster.now + step, stop=all_applied):
            return
    states = {}
    for n in cluster.nodes.values():
        core = n.live_core()
        states[n.id] = (
            core.role.value, core.term, core.commit_index, n.sm_index, core.voters, core.learners
        )
    raise LivenessFailure(f"no write committed on all nodes 10 s after repair: {states}")
