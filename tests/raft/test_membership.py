"""Membership changes in the Raft core: learners, promotion, removal, and their safety rules."""
from __future__ import annotations

import random

import pytest

from nameservice.raft import messages as msg
from nameservice.raft.core import RaftCore
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.membership import (
    apply_change,
    conf_of,
    decode_conf_change,
    encode_conf_change,
    is_conf_change,
)
from nameservice.raft.types import (
    ChangeKind,
    ConfChange,
    Config,
    ConfState,
    Role,
    Snapshot,
)
from tests.raft.harness import Net

ADD, PROMOTE, REMOVE = ChangeKind.ADD_LEARNER, ChangeKind.PROMOTE, ChangeKind.REMOVE


def change(net: Net, leader: int, kind: ChangeKind, node: int) -> int:
    index = net.cores[leader].propose_conf_change(ConfChange(kind, node))
    net.stabilize()
    return index


def grow(net: Net, leader: int = 1, extra: tuple[int, ...] = (4,)) -> RaftCore:
    """Elect ``leader`` and add ``extra`` as caught-up voters (learner, then promotion)."""
    core = net.elect(leader)
    for node in extra:
        change(net, leader, ADD, node)
        change(net, leader, PROMOTE, node)
    return core


# ----------------------------------------------------------------------------- the encoding


def test_a_configuration_entry_carries_the_change_and_the_whole_configuration():
    state = ConfState((1, 2, 3), (7,))
    data = encode_conf_change(ConfChange(ADD, 7), state)
    assert data.startswith(b"\x00C\x01") and is_conf_change(data)
    assert decode_conf_change(data) == (ConfChange(ADD, 7), state)
    assert conf_of(data) == state
    assert conf_of(b"\x01kv command") is None and conf_of(b"") is None
    assert conf_of(data[:-1]) is None  # a damaged one is no configuration at all
    with pytest.raises(ValueError):
        decode_conf_change(data + b"x")


def test_changes_that_do_not_fit_the_configuration_are_refused():
    state = ConfState((1, 2), (3,))
    assert apply_change(state, ConfChange(PROMOTE, 3)) == ConfState((1, 2, 3), ())
    assert apply_change(state, ConfChange(REMOVE, 3)) == ConfState((1, 2), ())
    for bad, reason in [
        (ConfChange(ADD, 2), "already a member"),
        (ConfChange(PROMOTE, 2), "not a learner"),
        (ConfChange(REMOVE, 9), "not a member"),
        (ConfChange(ADD, 0), "positive"),
    ]:
        with pytest.raises(ValueError, match=reason):
            apply_change(state, bad)
    with pytest.raises(ValueError, match="last voter"):
        apply_change(ConfState((1,), ()), ConfChange(REMOVE, 1))


def test_clients_cannot_propose_data_in_the_range_reserved_for_the_core():
    net = Net(3)
    leader = net.elect(1)
    with pytest.raises(ValueError, match="reserved"):
        leader.propose_batch([b"ok", b"\x00C\x01forged"])
    with pytest.raises(ValueError, match="reserved"):
        leader.propose_batch([b"", b"\x00"])  # behind a no-op too
    assert leader.last_index == 1  # nothing appended


def test_configuration_changes_need_the_leader():
    net = Net(3)
    net.elect(1)
    with pytest.raises(NotLeader):
        net.cores[2].propose_conf_change(ConfChange(REMOVE, 3))


# ----------------------------------------------------------------------------- learners


def test_an_added_learner_gets_the_log_but_never_counts_votes_or_campaigns():
    net = Net(4, voters=(1, 2, 3))
    leader = net.elect(1)
    leader.propose(b"before")
    net.stabilize()
    assert net.cores[4].conf_state == ConfState((), ())  # a joiner knows nothing yet
    change(net, 1, ADD, 4)
    assert net.data_applied(4) == [b"before"]
    for node in net.ids:
        assert net.cores[node].conf_state == ConfState((1, 2, 3), (4,))
    assert net.conf_states[1] == [ConfState((1, 2, 3), (4,))]  # reported in a Ready
    # With two voters down the learner's copy does not make a quorum.
    net.crash(2)
    net.crash(3)
    index = leader.propose(b"needs a voter")
    net.stabilize()
    assert leader.progress[4].match == index and leader.commit_index < index
    # The learner never campaigns, however long it waits.
    term = net.cores[4].term
    net.tick(100, only=(4,))
    assert net.cores[4].role is Role.FOLLOWER and net.cores[4].term == term
    net.start(2)
    net.tick(2, only=(1,))
    assert net.data_applied(4)[-1] == b"needs a voter"


def test_a_learner_added_after_compaction_is_caught_up_by_snapshot():
    net = Net(4, voters=(1, 2, 3))
    leader = net.elect(1)
    leader.propose_batch([b"%d" % i for i in range(30)])
    net.stabilize()
    applied = leader.applied_index
    leader.compact(Snapshot(leader.snapshot_meta(applied), b"image"))
    net.sent.clear()
    change(net, 1, ADD, 4)
    net.tick(3, only=(1,))
    (snap,) = [m for m in net.sent if type(m) is msg.SnapshotRequest and m.to == 4]
    assert snap.snapshot.meta.voters == (1, 2, 3) and snap.snapshot.meta.learners == ()
    learner = net.cores[4]
    assert learner.log.snapshot.data == b"image"
    assert learner.conf_state == ConfState((1, 2, 3), (4,))  # the change came after it
    assert learner.commit_index == leader.commit_index


def test_a_caught_up_learner_is_promoted_and_then_counts_in_the_quorum():
    net = Net(4, voters=(1, 2, 3))
    leader = net.elect(1)
    change(net, 1, ADD, 4)
    status = leader.status()
    assert status.learners == (4,) and status.progress[4].lag == 0
    assert not status.progress[4].voter
    change(net, 1, PROMOTE, 4)
    assert leader.voters == (1, 2, 3, 4) and leader.quorum == 3
    assert net.cores[4].is_voter
    net.crash(2)
    net.crash(3)
    index = leader.propose(b"two of four")
    net.stabilize()
    assert leader.commit_index < index
    net.start(3)
    net.tick(2, only=(1,))
    assert leader.commit_index >= index  # 1, 3 and 4: three of four


def test_promoting_a_learner_that_lags_is_refused_with_its_lag():
    net = Net(4, voters=(1, 2, 3), max_promotion_lag=10)
    leader = net.elect(1)
    change(net, 1, ADD, 4)
    net.cut.add((1, 4))
    leader.propose_batch([b"%d" % i for i in range(50)])
    net.stabilize()
    assert leader.status().progress[4].lag == 50
    with pytest.raises(ProposalDropped, match="learner 4 is not caught up: 50 entries behind"):
        leader.propose_conf_change(ConfChange(PROMOTE, 4))
    assert leader.learners == (4,)
    net.heal()
    net.tick(2, only=(1,))
    assert leader.status().progress[4].lag == 0
    change(net, 1, PROMOTE, 4)
    assert leader.voters == (1, 2, 3, 4)


def test_learners_do_not_count_towards_a_read_index_quorum():
    net = Net(4, voters=(1, 2, 3))
    leader = net.elect(1)
    change(net, 1, ADD, 4)
    net.cut.update({(1, 2), (1, 3)})  # only the learner hears the leader's heartbeats
    assert leader.read_index(b"r1")
    net.tick(3, only=(1,))
    assert net.read_states[1] == []
    net.heal()
    net.tick(1, only=(1,))
    assert [rs.ctx for rs in net.read_states[1]] == [b"r1"]


# ----------------------------------------------------------------------------- removal


def test_a_removed_follower_learns_of_its_removal_and_is_then_left_out():
    net = Net(3)
    leader = net.elect(1)
    change(net, 1, REMOVE, 3)
    assert leader.voters == (1, 2) and leader.quorum == 2
    removed = net.cores[3]
    assert removed.conf_state == ConfState((1, 2), ())  # the leader kept it informed
    assert 3 not in leader.progress  # ... until the removal committed
    net.sent.clear()
    leader.propose(b"after")
    net.stabilize()
    assert not any(m.to == 3 for m in net.sent)
    net.tick(100, only=(3,))
    assert removed.role is Role.FOLLOWER  # it knows it is out: it never campaigns
    net.crash(2)
    index = leader.propose(b"needs node 2")
    net.stabilize()
    assert leader.commit_index < index


def test_a_leader_that_removes_itself_leads_until_the_removal_commits_then_hands_over():
    net = Net(3)
    leader = net.elect(1)
    blocked = True
    net.filter = lambda m: not (blocked and type(m) is msg.AppendResponse and m.to == 1)
    index = change(net, 1, REMOVE, 1)
    assert leader.role is Role.LEADER and not leader.is_voter
    assert leader.voters == (2, 3) and leader.commit_index < index
    later = leader.propose(b"still served")  # it keeps leading meanwhile
    assert later == index + 1
    # Its reads are confirmed by a majority of the new voters; its own copy no longer counts.
    net.cut.add((1, 3))
    assert leader.read_index(b"read")
    net.tick(1, only=(1,))
    assert net.read_states[1] == []  # node 2 alone is not a majority of {2, 3}
    net.cut.clear()
    blocked = False
    net.tick(1, only=(1,))  # a heartbeat round: the followers' answers commit the removal
    assert leader.role is Role.FOLLOWER
    assert [rs.ctx for rs in net.read_states[1]] == [b"read"]
    new = net.leader()
    assert new is not None and new.id in (2, 3) and new.voters == (2, 3)
    assert new.term == leader.term + 1  # handed over at once (TimeoutNow), no timeout
    net.stabilize()
    assert net.data_applied(new.id)[-1] == b"still served"
    term = leader.term
    net.tick(100)
    assert leader.role is Role.FOLLOWER and net.leader() is new and leader.term == term


@pytest.mark.parametrize(
    "pre_vote, check_quorum", [(True, True), (False, True), (True, False), (False, False)]
)
def test_a_removed_node_that_keeps_campaigning_cannot_raise_the_cluster_term(
    pre_vote, check_quorum
):
    net = Net(4, pre_vote=pre_vote, check_quorum=check_quorum)
    leader = net.elect(1)
    net.isolate(4)  # it will never hear of its removal
    change(net, 1, REMOVE, 4)
    assert leader.voters == (1, 2, 3) and net.cores[4].voters == (1, 2, 3, 4)
    net.tick(100, only=(4,))
    net.heal()
    term = leader.term
    net.tick(200)  # node 4 keeps campaigning; everyone hears it
    assert net.cores[4].role is not Role.LEADER
    for node in (1, 2, 3):
        assert net.cores[node].term == term
    assert net.leader() is leader
    assert net.cores[2].counters["ignored_non_member"] > 0


# ----------------------------------------------------------------------------- one at a time


def test_only_one_configuration_change_may_be_pending():
    net = Net(5, voters=(1, 2, 3))
    leader = net.elect(1)
    net.isolate(1)
    index = leader.propose_conf_change(ConfChange(ADD, 4))
    net.stabilize()
    with pytest.raises(ProposalDropped, match=f"change at index {index} is not committed"):
        leader.propose_conf_change(ConfChange(ADD, 5))
    assert leader.status().pending_conf_index == index
    net.heal()
    net.tick(2, only=(1,))
    assert leader.status().pending_conf_index == 0
    change(net, 1, ADD, 5)
    assert leader.learners == (4, 5)


def test_a_new_leader_refuses_changes_until_an_entry_of_its_term_commits():
    net = Net(3, check_quorum=False)  # no leader lease: node 2 may take over at once
    net.elect(1)
    net.filter = lambda m: not (type(m) is msg.AppendResponse and m.to == 2)
    leader = net.elect(2)  # its no-op cannot commit: no acknowledgement reaches it
    with pytest.raises(ProposalDropped, match="not committed an entry of its term"):
        leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.filter = None
    net.tick(1, only=(2,))
    change(net, 2, REMOVE, 3)
    assert leader.voters == (1, 2)


def test_changes_are_refused_during_a_leadership_transfer():
    net = Net(3)
    leader = net.elect(1)
    net.cut.add((1, 2))
    leader.propose(b"x")
    net.stabilize()
    leader.transfer_leadership(2)
    with pytest.raises(ProposalDropped, match="transfer"):
        leader.propose_conf_change(ConfChange(REMOVE, 3))


# ----------------------------------------------------------------------------- rollback, restart


def test_an_uncommitted_change_replaced_by_a_new_leader_is_rolled_back():
    net = Net(4, voters=(1, 2, 3), check_quorum=False)
    old = net.elect(1)
    net.isolate(1)
    old.propose_conf_change(ConfChange(ADD, 4))
    net.stabilize()
    assert old.learners == (4,)
    net.crash(1)
    net.heal()
    new = net.elect(2)
    new.propose(b"from 2")
    net.stabilize()
    net.conf_states[1].clear()
    restarted = net.start(1)
    assert restarted.learners == (4,)  # rebuilt from its log: the entry is there
    net.tick(2, only=(2,))
    assert restarted.conf_state == ConfState((1, 2, 3), ())  # replaced, so rolled back
    assert net.conf_states[1] == [ConfState((1, 2, 3), ())]
    assert not net.conflicts()


def test_a_restarted_node_rebuilds_its_configuration_from_its_log():
    net = Net(5, voters=(1, 2, 3))
    grow(net, 1, extra=(4,))
    change(net, 1, ADD, 5)
    change(net, 1, REMOVE, 2)
    want = ConfState((1, 3, 4), (5,))
    for node in (1, 3, 4, 5):
        net.crash(node)
        assert net.start(node).conf_state == want, node


def test_a_restarted_node_rebuilds_its_configuration_from_a_snapshot():
    net = Net(5, voters=(1, 2, 3))
    leader = grow(net, 1, extra=(4,))
    change(net, 1, ADD, 5)
    mid = leader.commit_index
    change(net, 1, REMOVE, 2)
    leader.propose(b"tail")
    net.stabilize()
    # The configuration at an index is the one in force there, not the newest.
    at_mid = leader.snapshot_meta(mid)
    assert (at_mid.voters, at_mid.learners) == ((1, 2, 3, 4), (5,))
    for node in (1, 3):
        core = net.cores[node]
        meta = core.snapshot_meta(core.applied_index)
        assert (meta.voters, meta.learners) == ((1, 3, 4), (5,))
        snap = Snapshot(meta, b"image")
        core.compact(snap)
        assert core.log.first_index == meta.index + 1 and core.conf.changes == []
        again = RaftCore(
            Config(id=node, voters=(1, 2, 3)), random.Random(0), core.hard_state(), snap,
            list(core.log.entries),
        )
        assert again.conf_state == ConfState((1, 3, 4), (5,))
    # A snapshot naming another configuration than the one at its index is refused.
    core = net.cores[4]
    wrong = core.snapshot_meta(core.applied_index)._replace(voters=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="configuration there"):
        core.compact(Snapshot(wrong, b""))


def test_a_joining_node_starts_with_an_empty_configuration():
    core = RaftCore(Config(id=9, voters=()), random.Random(0))
    assert core.conf_state == ConfState((), ()) and not core.is_voter
    core.campaign()
    core.tick(100)
    assert core.role is Role.FOLLOWER and core.term == 0
    with pytest.raises(ValueError):
        Config(id=9, voters=(1, 2)).validate()
    Config(id=9, voters=(1, 2), learners=(9,)).validate()


# ----------------------------------------------------------------------------- the known bug


def test_a_new_leader_cannot_commit_a_change_over_an_uncommitted_one_of_another_leader():
    """Ongaro's single-server-change bug (raft-dev, 2015), on the paper's algorithm.

    Voters 1-4 and learner 5. Leader 1 (term 1) promotes 5, but only 5 receives the change:
    for 1 and 5 the voters are now {1..5}. Node 2 wins term 2 with 3 and 4 (a majority of
    {1..4}); its appends reach 3 only. If 2 could now remove 4, then {1, 2, 3} would commit it
    with 2 and 3 — while 1, with 4 and 5, is a majority of {1..5} and wins term 3. Two disjoint
    majorities, each committing its own entry at index 3. The rule that a leader first commits
    an entry of its own term refuses 2's change, and nothing conflicts.
    """
    net = Net(5, voters=(1, 2, 3, 4), pre_vote=False, check_quorum=False)
    leader1 = net.elect(1)
    change(net, 1, ADD, 5)

    def partition(*groups: set[int]) -> None:
        net.cut = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}

    partition({1, 5}, {2, 3, 4})
    leader1.propose_conf_change(ConfChange(PROMOTE, 5))  # index 3, term 1: only 1 and 5
    net.stabilize()
    assert net.cores[5].voters == (1, 2, 3, 4, 5) and net.cores[2].voters == (1, 2, 3, 4)

    # Node 2's appends never reach node 4, so its term-2 no-op stays uncommitted.
    net.filter = lambda m: not (m.frm == 2 and m.to == 4 and type(m) is not msg.VoteRequest)
    leader2 = net.elect(2)
    assert leader2.term == 2 and leader2.commit_index < leader2.last_index
    try:
        leader2.propose_conf_change(ConfChange(REMOVE, 4))
        refused = ""
    except ProposalDropped as exc:
        refused = exc.reason
    net.stabilize()

    # Node 1 restarts and campaigns among {1, 4, 5}: a majority of the voters it knows.
    net.crash(1)
    partition({1, 4, 5}, {2, 3})
    leader1 = net.start(1)
    for _ in range(3):
        if leader1.role is not Role.LEADER:
            leader1.campaign()
            net.stabilize()
    assert leader1.role is Role.LEADER and leader1.term == 3
    conflicts = net.conflicts()
    assert not conflicts, "two majorities committed different entries:\n" + "\n".join(conflicts)
    assert "not committed an entry of its term" in refused

    net.filter = None
    net.heal()
    net.tick(3)
    assert not net.conflicts()
    leader = net.leader()
    assert leader is not None
    for node in net.ids:
        assert net.cores[node].log.last_index() == leader.last_index
