"""The read service alone: one read index per step, served once applied; failures."""
from __future__ import annotations

import time

from nameservice import wire
from nameservice.kv import Batch, KvStateMachine, Put
from nameservice.raft.types import ReadState
from nameservice.server.reads import ReadService
from nameservice.server.stale import StaleWrites


class Setup:
    def __init__(self, index_granted: bool = True) -> None:
        self.machine = KvStateMachine()
        self.asked: list[bytes] = []
        self.replies: list[tuple] = []
        self.granted = index_granted
        self.reads = ReadService(self.machine, StaleWrites(None), self._read_index,
                                 lambda *r: self.replies.append(r), timeout_s=1.0)

    def _read_index(self, ctx: bytes) -> bool:
        self.asked.append(ctx)
        return self.granted

    def put(self, key: bytes, value: bytes) -> None:
        self.machine.apply(self.machine.applied_index + 1, Batch((Put(key, value),)))


def test_the_reads_of_a_step_share_one_read_index_and_are_served_once_it_is_applied():
    s = Setup()
    s.reads.add(b"c", 1, wire.OP_GET, b"k", 0)
    s.reads.add(b"c", 2, wire.OP_RANGE, b"", 0)
    s.reads.start()
    s.reads.start()  # nothing more collected: nothing asked
    assert len(s.asked) == 1 and s.reads.in_flight == 1 and s.reads.pending == 2
    s.reads.on_read_states([ReadState(1, s.asked[0])])
    s.reads.release()
    assert s.replies == []  # the machine has not applied index 1 yet
    s.put(b"k", b"v")
    s.reads.release()
    (_, rid1, st1, get), (_, rid2, st2, range_) = s.replies
    assert (rid1, st1, rid2, st2) == (1, wire.ST_OK, 2, wire.ST_OK)
    assert get[0][:2] == [b"k", b"v"] and [kv[0] for kv in range_[0]] == [b"k"]
    assert s.reads.pending == 0


def test_a_read_index_the_core_drops_answers_its_reads_busy():
    s = Setup(index_granted=False)
    s.reads.add(b"c", 1, wire.OP_GET, b"k", 0)
    s.reads.start()
    assert [(rid, status) for _, rid, status, _ in s.replies] == [(1, wire.ST_BUSY)]
    assert s.reads.pending == 0


def test_a_read_index_that_does_not_come_in_time_fails_its_reads_unavailable():
    s = Setup()
    s.reads.add(b"c", 1, wire.OP_GET, b"k", 0)
    s.reads.start()
    s.reads.expire(time.monotonic())
    assert s.replies == []
    s.reads.expire(time.monotonic() + 1.5)
    assert s.replies == [(b"c", 1, wire.ST_UNAVAILABLE, "read index timed out")]
    assert s.reads.in_flight == 0 and s.reads.pending == 0


def test_a_leader_change_fails_the_groups_in_flight_but_not_those_confirmed():
    s = Setup()
    s.reads.add(b"c", 1, wire.OP_GET, b"k", 0)
    s.reads.start()
    s.reads.on_read_states([ReadState(1, s.asked[0])])
    s.reads.add(b"c", 2, wire.OP_GET, b"k", 0)
    s.reads.start()
    s.reads.fail_groups(wire.ST_NOT_LEADER, "n2:2")
    assert s.replies == [(b"c", 2, wire.ST_NOT_LEADER, "n2:2")]
    s.put(b"k", b"v")
    s.reads.release()
    assert [rid for _, rid, _, _ in s.replies] == [2, 1]


def test_the_service_is_full_at_max_pending_reads():
    s = Setup()
    s.reads.max_pending = 2
    s.reads.add(b"c", 1, wire.OP_GET, b"k", 0)
    assert not s.reads.full
    s.reads.add(b"c", 2, wire.OP_GET, b"k", 0)
    assert s.reads.full
