"""Scripted behaviour of the Raft core, one feature per test."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nameservice.raft import messages as msg
from nameservice.raft.core import RaftCore
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.types import Config, Entry, HardState, Role, Snapshot, SnapshotMeta
from tests.raft.harness import Net


def test_a_leader_is_elected_and_proposals_are_applied_everywhere_in_order():
    net = Net(3)
    leader = net.elect(1)
    leader.propose_batch([b"a", b"b", b"c"])
    net.stabilize()
    for node in net.ids:
        assert net.data_applied(node) == [b"a", b"b", b"c"]


def test_proposals_on_a_follower_raise_not_leader_with_a_hint():
    net = Net(3)
    net.elect(1)
    with pytest.raises(NotLeader) as info:
        net.cores[2].propose(b"x")
    assert info.value.leader_hint == 1


def test_many_proposals_travel_in_one_append_per_follower():
    net = Net(3)
    leader = net.elect(1)
    net.sent.clear()
    for i in range(100):
        leader.propose(b"%d" % i)
    net.stabilize()
    appends = [m for m in net.sent if type(m) is msg.AppendRequest and m.entries]
    assert len(appends) == 2
    assert all(len(m.entries) == 100 for m in appends)


def test_prevote_keeps_an_isolated_node_from_raising_its_term():
    net = Net(3, pre_vote=True)
    net.elect(1)
    term = net.cores[1].term
    net.isolate(3)
    net.tick(200)
    assert net.cores[3].term == term  # its PreVotes failed, so it never bumped the term
    net.heal()
    net.tick(5)
    assert net.cores[1].role is Role.LEADER and net.cores[1].term == term


def test_without_prevote_an_isolated_node_disrupts_the_leader_when_it_returns():
    net = Net(3, pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.cores[1].term
    net.isolate(3)
    net.tick(100)
    assert net.cores[3].term > term
    net.heal()
    net.tick(1)
    assert net.cores[1].term > term  # the old leader was deposed by the higher term


def test_check_quorum_makes_an_isolated_leader_step_down():
    net = Net(3, check_quorum=True)
    net.elect(1)
    net.isolate(1)
    net.tick(30, only=(1,))
    assert net.cores[1].role is Role.FOLLOWER


def test_leadership_transfer_hands_over_and_refuses_proposals_meanwhile():
    net = Net(3)
    leader = net.elect(1)
    net.cut.add((1, 2))  # keep node 2 from catching up at once
    leader.propose(b"x")
    net.stabilize()
    leader.transfer_leadership(2)
    with pytest.raises(ProposalDropped):
        leader.propose(b"y")
    net.heal()
    net.tick(2)
    assert net.cores[2].role is Role.LEADER
    assert net.cores[1].role is Role.FOLLOWER
    assert net.data_applied(2) == [b"x"]


def test_leader_read_index_is_released_only_after_a_quorum_confirms_leadership():
    net = Net(3)
    leader = net.elect(1)
    net.isolate(1)
    assert leader.read_index(b"r1")
    net.stabilize()
    assert net.read_states[1] == []  # no quorum heard: no read point
    net.heal()
    net.tick(1, only=(1,))
    assert [rs.ctx for rs in net.read_states[1]] == [b"r1"]
    assert net.read_states[1][0].index == leader.commit_index


def test_follower_read_index_is_answered_by_the_leader():
    net = Net(3)
    leader = net.elect(1)
    leader.propose(b"w")
    net.stabilize()
    assert net.cores[2].read_index(b"f1")
    net.stabilize()
    net.tick(1, only=(1,))
    (rs,) = net.read_states[2]
    assert rs.ctx == b"f1" and rs.index == leader.commit_index


def test_a_deposed_leader_cannot_release_a_read():
    net = Net(3)
    old = net.elect(1)
    net.isolate(1)
    net.tick(40, only=(2, 3))  # 2 and 3 elect a new leader among themselves
    assert net.leader().id in (2, 3) and net.leader().term > old.term
    assert old.role is Role.LEADER  # it has not noticed yet
    assert old.read_index(b"stale")
    net.tick(5, only=(1,))
    net.heal()
    net.tick(5, only=(1,))  # its heartbeats now reach nodes that answer with a higher term
    assert old.role is Role.FOLLOWER
    assert net.read_states[1] == []


def test_a_lagging_follower_is_caught_up_by_snapshot():
    net = Net(3)
    leader = net.elect(1)
    net.crash(3)
    leader.propose_batch([b"%d" % i for i in range(50)])
    net.stabilize()
    applied = leader.applied_index
    leader.compact(Snapshot(SnapshotMeta(applied, leader.log.term(applied), net.ids), b"image"))
    assert leader.log.first_index == applied + 1
    net.start(3)
    net.sent.clear()
    net.tick(3)
    assert any(type(m) is msg.SnapshotRequest and m.to == 3 for m in net.sent)
    assert net.cores[3].commit_index >= applied
    assert net.cores[3].log.snapshot.data == b"image"
    leader.propose(b"after")
    net.stabilize()
    assert net.data_applied(3)[-1] == b"after"


def test_fast_backtracking_skips_a_whole_divergent_term_per_round_trip():
    # Node 3 holds 60 entries of a stale term; the leader's log diverges right after index 1.
    stale = [Entry(1, 1, b"")] + [Entry(2, i, b"s%d" % i) for i in range(2, 62)]
    net = Net(3)
    net.disks[3] = (HardState(2, 0, 1), None, stale)
    net.disks[1] = (HardState(3, 0, 1), None, [Entry(1, 1, b""), Entry(3, 2, b"n")])
    net.disks[2] = (HardState(3, 0, 1), None, [Entry(1, 1, b""), Entry(3, 2, b"n")])
    for i in net.ids:
        net.start(i)
    leader = net.elect(1)
    net.stabilize()
    rejections = [m for m in net.sent if type(m) is msg.AppendResponse and m.reject and m.frm == 3]
    assert len(rejections) <= 2
    assert leader.progress[3].match == leader.last_index
    assert [e.term for e in net.cores[3].log.entries] == [e.term for e in leader.log.entries]


def test_a_leader_does_not_commit_an_old_term_entry_by_counting_replicas():
    # Raft paper Figure 8, in three nodes: node 1 leads term 4 holding index 2 of term 2; node 3
    # holds index 2 of term 3. Once node 2 also has index 2, that entry sits on a majority but
    # must not count as committed: node 3 could still win an election and overwrite it. It
    # becomes committed only with the leader's own term-4 entry at index 3.
    net = Net(3, max_entries_per_message=1, pre_vote=False)
    net.disks[1] = (HardState(3, 0, 1), None, [Entry(1, 1, b"a"), Entry(2, 2, b"old")])
    net.disks[2] = (HardState(3, 0, 1), None, [Entry(1, 1, b"a")])
    net.disks[3] = (HardState(3, 0, 1), None, [Entry(1, 1, b"a"), Entry(3, 2, b"other")])
    for i in net.ids:
        net.start(i)
    net.isolate(3)
    leader = net.cores[1]
    seen = []
    leader.campaign()
    net.stabilize(
        after_step=lambda m: seen.append(
            (leader.progress.get(2) and leader.progress[2].match, leader.commit_index)
        )
    )
    assert leader.role is Role.LEADER and leader.term == 4
    assert (2, 1) in seen  # node 2 held index 2 while the commit index stayed at 1
    assert all(commit < 2 for match, commit in seen if match is not None and match < 3)
    assert leader.commit_index == 3


def test_garbage_messages_are_counted_and_dropped_never_raised():
    net = Net(3)
    core = net.elect(1)
    before = core.counters["dropped_invalid"]
    bad = [
        object(),
        "hello",
        None,
        msg.Heartbeat(frm=0, to=1, term=core.term, commit=0),  # no sender
        msg.Heartbeat(frm=1, to=1, term=core.term, commit=0),  # from ourselves
        msg.Heartbeat(frm=2, to=3, term=core.term, commit=0),  # not addressed to us
        msg.Heartbeat(frm=2, to=1, term=-1, commit=0),
        msg.AppendRequest(2, 1, core.term, 0, 0, (Entry(1, 5, b""),), 0),  # gap
        msg.AppendRequest(2, 1, core.term, 0, 0, [Entry(1, 1, b"")], 0),  # not a tuple
        msg.AppendResponse(2, 1, core.term, index=10**9),  # acks what was never sent
        msg.VoteRequest(2, 1, "x", 0, 0),
        msg.SnapshotRequest(2, 1, core.term, snapshot="nope"),
        msg.ReadIndexRequest(2, 1, core.term, ctx=b""),
    ]
    for m in bad:
        core.step(m)
    assert core.counters["dropped_invalid"] == before + len(bad)
    core.propose(b"still fine")
    net.stabilize()
    assert net.data_applied(2) == [b"still fine"]


def test_a_candidate_counts_its_own_vote_only_after_it_is_durable():
    core = RaftCore(Config(id=1, voters=(1,)), random.Random(0))
    core.campaign()
    assert core.role is Role.CANDIDATE
    rd = core.ready()
    assert rd.hard_state.vote == 1
    core.advance(rd)
    assert core.role is Role.LEADER


def test_a_leader_counts_its_own_entries_only_after_they_are_durable():
    core = RaftCore(Config(id=1, voters=(1,)), random.Random(0))
    core.campaign()
    core.advance(core.ready())
    core.advance(core.ready())  # the no-op
    core.propose(b"x")
    rd = core.ready()
    assert rd.entries and not any(e.data == b"x" for e in rd.committed)
    core.advance(rd)
    assert [e.data for e in core.ready().committed] == [b"x"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_tick_n_is_exactly_n_single_ticks(steps):
    def fresh():
        return RaftCore(Config(id=1, voters=(1, 2, 3)), random.Random(5))

    a, b = fresh(), fresh()
    for n in steps:
        a.tick(n)
        for _ in range(n):
            b.tick()
        ra, rb = a.ready(), b.ready()
        assert ra.messages == rb.messages and ra.early_messages == rb.early_messages
        assert ra.hard_state == rb.hard_state
        a.advance(ra)
        b.advance(rb)
        assert (a.role, a.term, a.election_elapsed) == (b.role, b.term, b.election_elapsed)
