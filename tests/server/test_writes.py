"""The write batcher alone: one entry per step, size limits, the pending bound, waiters."""
from __future__ import annotations

from nameservice import wire
from nameservice.kv import Batch, KvStateMachine, PutResult, decode_command
from nameservice.kv.codec import proposal_from_wire
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.server.writes import WriteBatcher

LEADER = "leader:1"


class Proposals:
    """Stands in for ``RaftCore.propose``: entries numbered from 1, or ``error`` raised."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.error: Exception | None = None

    def __call__(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self.entries.append(data)
        return len(self.entries)


def batcher(**limits) -> tuple[WriteBatcher, Proposals, list]:
    proposals, replies = Proposals(), []
    writes = WriteBatcher(proposals, lambda *reply: replies.append(reply), lambda: LEADER,
                          **limits)
    return writes, proposals, replies


def put(writes: WriteBatcher, rid: int, key: bytes, size: int = 30) -> None:
    command = [1, key, b"v", 0, False]  # a bare Put (clients wrap theirs in a session Request)
    writes.add(b"client", rid, command, proposal_from_wire(command), size)


def test_the_writes_of_a_step_become_one_entry_and_their_writers_get_their_results():
    writes, proposals, replies = batcher()
    for rid, key in enumerate((b"a", b"b", b"c"), 1):
        put(writes, rid, key)
    assert proposals.entries == [] and writes.collected == 3
    writes.propose()
    writes.propose()  # nothing more collected: nothing proposed
    assert len(proposals.entries) == 1 and writes.counters["entries_proposed"] == 1
    data = proposals.entries[0]
    batch = decode_command(data)
    assert type(batch) is Batch and [item.key for item in batch.items] == [b"a", b"b", b"c"]
    claimed_batch, waiters = writes.claim(1, data)
    assert claimed_batch == batch and waiters == [(b"client", 1), (b"client", 2), (b"client", 3)]
    applied = KvStateMachine().apply(1, claimed_batch)
    writes.answer(waiters, applied.results)
    assert [(rid, status) for _, rid, status, _ in replies] == [(1, 0), (2, 0), (3, 0)]
    assert all(type(r) is PutResult for r in applied.results) and writes.pending == 0


def test_a_batch_is_proposed_as_soon_as_it_holds_max_items():
    writes, proposals, _ = batcher(max_items=2)
    put(writes, 1, b"a")
    put(writes, 2, b"b")
    put(writes, 3, b"c")
    assert len(proposals.entries) == 1 and writes.collected == 1


def test_a_batch_is_proposed_as_soon_as_it_holds_about_max_bytes():
    writes, proposals, _ = batcher(max_bytes=100)
    put(writes, 1, b"a", size=60)
    assert proposals.entries == []
    put(writes, 2, b"b", size=60)
    assert len(proposals.entries) == 1 and writes.collected == 0


def test_the_batcher_is_full_at_max_pending_writes_until_they_are_answered():
    writes, proposals, _ = batcher(max_pending=2)
    put(writes, 1, b"a")
    assert not writes.full
    put(writes, 2, b"b")
    writes.propose()
    assert writes.full and writes.pending == 2
    batch, waiters = writes.claim(1, proposals.entries[0])
    writes.answer(waiters, KvStateMachine().apply(1, batch).results)
    assert not writes.full and writes.pending == 0


def test_writes_proposed_to_a_node_that_does_not_lead_are_answered_not_leader():
    writes, proposals, replies = batcher()
    proposals.error = NotLeader(2)
    put(writes, 1, b"a")
    writes.propose()
    assert replies == [(b"client", 1, wire.ST_NOT_LEADER, LEADER)] and writes.pending == 0


def test_writes_whose_proposal_is_dropped_are_answered_busy():
    writes, proposals, replies = batcher()
    proposals.error = ProposalDropped("transfer under way")
    put(writes, 1, b"a")
    writes.propose()
    assert [(rid, status) for _, rid, status, _ in replies] == [(1, wire.ST_BUSY)]
    assert writes.pending == 0


def test_an_entry_another_leader_wrote_over_ours_fails_our_writers_not_leader():
    writes, _, replies = batcher()
    put(writes, 1, b"a")
    writes.propose()
    assert writes.claim(1, b"someone else's entry") is None
    assert replies == [(b"client", 1, wire.ST_NOT_LEADER, LEADER)]
    assert writes.claim(1, b"someone else's entry") is None  # forgotten
    assert writes.pending == 0


def test_losing_the_leadership_fails_every_proposed_write_not_leader():
    writes, _, replies = batcher()
    put(writes, 1, b"a")
    writes.propose()
    put(writes, 2, b"b")
    writes.propose()
    writes.fail_all()
    assert sorted(rid for _, rid, _, _ in replies) == [1, 2]
    assert {status for _, _, status, _ in replies} == {wire.ST_NOT_LEADER}
    assert writes.pending == 0
