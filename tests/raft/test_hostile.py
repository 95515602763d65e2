"""Terms and votes from hostile or broken peers: bounded terms, and vote requests that cannot
win, which change nothing (issue 13's forged VoteRequest and TimeoutNow floods)."""
from __future__ import annotations

import random

import pytest

from nameservice.raft import messages as msg
from nameservice.raft.core import RaftCore
from nameservice.raft.types import MAX_TERM, Config, HardState, Role
from tests.raft.harness import Net

OUTSIDER = 99  # an id no member has: what a forger with no knowledge of the cluster sends


def _leader_with_entries(**config) -> tuple[Net, RaftCore]:
    net = Net(3, **config)
    leader = net.elect(1)
    leader.propose_batch([b"a", b"b"])
    net.stabilize()
    return net, leader


def test_a_message_with_a_term_beyond_the_bound_is_malformed_and_changes_nothing():
    net, leader = _leader_with_entries()
    term = leader.term
    for core in (net.cores[1], net.cores[2]):
        before = core.counters["dropped_invalid"]
        last = core.last_index
        for frm in (3, OUTSIDER):
            core.step(msg.VoteRequest(frm, core.id, (1 << 63) - 1, last + 10, MAX_TERM,
                                      transfer=True))
            core.step(msg.Heartbeat(frm, core.id, MAX_TERM + 1, 0))
            core.step(msg.TimeoutNow(frm, core.id, MAX_TERM + 1))
        assert core.counters["dropped_invalid"] == before + 6
        assert core.term == term
    net.stabilize()
    assert leader.role is Role.LEADER and leader.term == term


def test_a_vote_request_whose_log_is_behind_raises_no_term_even_with_the_transfer_flag():
    """Issue 13: one VoteRequest (transfer flag, huge term) left every node without a leader,
    and a request every 150 ms drove the term from 7 to 87. A request whose log is behind ours
    cannot win our vote, so it changes nothing at all, from a member or from anyone."""
    for pre_vote in (False, True):
        for check_quorum in (False, True):
            net, leader = _leader_with_entries(pre_vote=pre_vote, check_quorum=check_quorum)
            term = leader.term
            for round_ in range(50):
                for target in (1, 2):
                    for frm in (3, OUTSIDER):
                        for flags in ((False, True), (True, True), (False, False)):
                            net.cores[target].step(msg.VoteRequest(
                                frm, target, term + 1 + round_, 1, 1, *flags))
                net.tick(3)
            leader.propose(b"c")
            net.stabilize()
            assert leader.role is Role.LEADER and leader.term == term
            assert all(core.term == term for core in net.cores.values())
            assert net.data_applied(3) == [b"a", b"b", b"c"]
            counters = net.cores[2].counters
            assert counters["ignored_behind"] == counters["ignored_non_member"] == 50 * 3


def test_in_the_lease_a_transfer_vote_request_counts_only_for_the_next_term():
    """A forged transfer request claiming an up-to-date log may not jump the term while a
    leader is live: a real transfer campaigns in the leader's term + 1."""
    net, leader = _leader_with_entries()
    term = leader.term
    follower = net.cores[2]
    before = follower.counters["dropped_stale"]
    follower.step(msg.VoteRequest(3, 2, term + 40, follower.last_index, term, False, True))
    assert follower.term == term and follower.counters["dropped_stale"] == before + 1
    net.stabilize()
    assert leader.role is Role.LEADER and leader.term == term
    # The real thing still works.
    leader.transfer_leadership(2)
    net.stabilize()
    assert net.cores[2].role is Role.LEADER and net.cores[2].term == term + 1


def test_a_node_at_the_term_bound_does_not_campaign():
    core = RaftCore(Config(id=1, voters=(1, 2, 3)), random.Random(0), HardState(MAX_TERM, 0, 0))
    core.tick(1000)
    core.campaign()
    assert core.role is Role.FOLLOWER and core.term == MAX_TERM
    assert not core.early_messages() and core.counters["term_at_bound"] > 0


@pytest.mark.parametrize("pre_vote", [False, True])
def test_a_candidate_behind_at_a_high_term_cannot_stop_an_up_to_date_node_from_winning(pre_vote):
    """Its requests no longer carry its term to the others; they learn it from its refusals
    of their lower-term requests, campaign above it and win (without PreVote too)."""
    net = Net(3, pre_vote=pre_vote, check_quorum=False)
    leader = net.elect(1)
    net.isolate(3)
    leader.propose_batch([b"a", b"b"])
    net.tick(1)
    net.tick(300, only=(3,))  # node 3, behind, campaigns alone for a while
    assert pre_vote or net.cores[3].term > leader.term + 5
    net.crash(1)  # the only other up-to-date node left is 2, and it needs node 3's vote
    net.heal()
    for _ in range(200):
        net.tick(1)
        if net.cores[2].role is Role.LEADER:
            break
    assert net.cores[2].role is Role.LEADER
    net.cores[2].propose(b"c")
    net.stabilize()
    assert net.data_applied(3) == [b"a", b"b", b"c"]
