"""The replica machine on its own: what a log entry does to it, and what a snapshot keeps."""
from __future__ import annotations

import random

import msgpack
import pytest

from fabric.errors import DecodeError
from fabric.stateful import Input, Stateful
from fabric.stateful.machine import (
    AppliedSeqs,
    ReplicaMachine,
    encode_input,
    encode_outbox_acked,
)

A, B = b"a" * 16, b"b" * 16


class Log(Stateful):
    """Keeps every payload it applied, in order; emits the even ones."""

    def __init__(self) -> None:
        self.state = []

    def apply(self, message: Input) -> None:
        if message.payload == "boom":
            raise ValueError("boom")
        self.state.append(message.payload)
        if message.payload % 2 == 0:
            self.emit(message.payload)


def machine(**options) -> ReplicaMachine:
    return ReplicaMachine(Log(), **options)


def test_a_message_applied_once_is_skipped_when_it_comes_again_in_any_entry():
    m = machine()
    assert m.apply_entry(1, encode_input([(A, 0, [0, 1, 2]), (B, 5, [50])])) == 4
    # A resend after a failover: the same messages, cut differently, with one new one.
    assert m.apply_entry(2, encode_input([(A, 1, [1, 2, 3]), (B, 5, [50])])) == 1
    assert m.component.state == [0, 1, 2, 50, 3]
    assert m.counters["duplicates_skipped"] == 3
    assert m.apply_entry(2, encode_input([(A, 9, [9])])) == 0  # an index applied already
    assert m.applied_index == 2


def test_messages_out_of_order_are_each_applied_once():
    seqs = AppliedSeqs()
    assert [seqs.add(s, 100) for s in (2, 0, 3, 1, 2, 4)] == [True, True, True, True, False, True]
    assert seqs.floor == 5 and not seqs.above


def test_a_gap_that_never_fills_stops_holding_the_floor_back_beyond_its_bound():
    seqs = AppliedSeqs()
    for seq in range(1, 5):  # 0 never comes (another consumer group took it)
        seqs.add(seq, max_gap=3)
    assert seqs.floor == 5 and not seqs.above


def test_the_producer_applied_longest_ago_is_forgotten_at_the_bound():
    m = machine(max_producers=2)
    for index, pid in enumerate((A, B, b"c" * 16), start=1):
        m.apply_entry(index, encode_input([(pid, 0, [1])]))
    assert list(m.producers) == [B, b"c" * 16] and m.counters["producers_forgotten"] == 1


def test_what_apply_emits_is_numbered_in_the_outbox_until_acknowledged():
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, [0, 1, 2, 3, 4])]))
    m.apply_entry(2, encode_input([(A, 5, [6, 8])]))
    assert list(m.outbox) == [(0, [0, 2, 4]), (3, [6, 8])] and m.emitted == 5  # a batch per entry
    m.apply_entry(3, encode_outbox_acked(2))
    assert list(m.outbox) == [(2, [4]), (3, [6, 8])] and m.outbox_floor == 2
    assert m.outbox_from(3) == [(3, [6, 8])] and m.outbox_from(2) == list(m.outbox)
    m.apply_entry(4, encode_outbox_acked(10))  # never past what was emitted
    assert not m.outbox and m.emitted == 5 and m.outbox_floor == 5


def test_an_entry_emitting_more_than_a_batch_holds_is_cut_the_same_way_everywhere():
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, list(range(0, 2 * 3000, 2)))]))
    assert [(first, len(p)) for first, p in m.outbox] == [(0, 1024), (1024, 1024), (2048, 952)]


def test_an_apply_that_raises_is_counted_and_the_message_counts_as_applied():
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, [1, "boom", 3])]))
    assert m.component.state == [1, 3] and m.counters["apply_errors"] == 1
    assert not m.outbox  # nothing emitted: both odd
    assert m.apply_entry(2, encode_input([(A, 1, ["boom"])])) == 0  # not again


@pytest.mark.parametrize("data", [b"\x93\x01\x02\x03", msgpack.packb([7, []]),
                                  msgpack.packb([1, [["not bytes", 0, [1]]]]),
                                  msgpack.packb([1, [[A, 0, "not a list"]]]), b"\xc1",
                                  msgpack.packb([1, [[A, 1, [4]], ["not bytes", 0, [1]]]])])
def test_an_entry_that_does_not_decode_changes_nothing_but_the_applied_index(data):
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, [2])]))
    before = m.snapshot()
    assert m.apply_entry(2, data) == 0
    assert m.counters["malformed_entries"] == 1 and m.applied_index == 2
    restored = machine()
    restored.restore(before)
    assert restored.state_digest() == m.state_digest()


def test_no_ops_and_the_raft_cores_own_entries_only_advance_the_index():
    m = machine()
    assert m.apply_entry(1, b"") == 0 and m.apply_entry(2, b"\x00C\x01rest") == 0
    assert m.applied_index == 2 and m.counters["malformed_entries"] == 0


def test_a_snapshot_restores_state_applied_numbers_and_outbox():
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, [0, 1]), (B, 3, [4])]))
    m.apply_entry(2, encode_outbox_acked(1))
    other = machine()
    other.restore(m.snapshot())
    assert other.component.state == [0, 1, 4] and other.applied_index == 2
    assert list(other.outbox) == [(1, [4])] and other.outbox_floor == 1
    assert other.state_digest() == m.state_digest()
    # It remembers what was applied: the same resend is skipped on both.
    resend = encode_input([(A, 0, [0, 1]), (B, 3, [4]), (B, 0, [6])])
    assert other.apply_entry(3, resend) == m.apply_entry(3, resend) == 1
    assert other.state_digest() == m.state_digest()


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb({"v": 99}),
                                  msgpack.packb({"v": 1, "index": 1})])
def test_a_snapshot_that_does_not_decode_is_refused_and_changes_nothing(data):
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, [2])]))
    digest = m.state_digest()
    with pytest.raises(DecodeError):
        m.restore(data)
    assert m.state_digest() == digest and m.applied_index == 1


def test_emit_outside_apply_is_a_clear_error():
    with pytest.raises(RuntimeError, match="inside apply"):
        Log().emit(1)


def test_a_run_is_recorded_whole_only_when_none_of_it_was_applied():
    seqs = AppliedSeqs()
    assert seqs.add_run(0, 10, 100) and seqs.floor == 10
    assert seqs.add_run(20, 5, 100) and seqs.above == set(range(20, 25))
    assert not seqs.add_run(18, 4, 100)  # 20 and 21 were applied: nothing recorded
    assert seqs.above == set(range(20, 25)) and seqs.floor == 10
    assert seqs.add_run(10, 10, 100) and seqs.floor == 25 and not seqs.above
    assert not seqs.add_run(5, 1, 100)


def test_a_run_recorded_at_once_leaves_what_its_messages_one_by_one_would():
    # Beyond the gap bound too: a run may overflow it by more than one gap.
    seqs = AppliedSeqs(7, {19, *range(53, 60)})
    assert seqs.add_run(60, 4, 8) and (seqs.floor, seqs.above) == (64, set())
    rng = random.Random(0)
    for _ in range(2000):
        whole, single, gap = AppliedSeqs(), AppliedSeqs(), rng.randint(1, 6)
        for _ in range(rng.randint(1, 15)):
            first, count = rng.randint(0, 40), rng.randint(0, 8)
            if whole.add_run(first, count, gap):
                assert all(single.add(seq, gap) for seq in range(first, first + count))
            else:
                for seq in range(first, first + count):
                    assert whole.add(seq, gap) == single.add(seq, gap)
            assert (whole.floor, whole.above) == (single.floor, single.above)


class Recent(Stateful):
    """Emits the list it keeps, then changes it: the outbox must hold what was emitted."""

    def __init__(self) -> None:
        self.state = {"recent": []}

    def apply(self, message: Input) -> None:
        if message.payload == "too big":
            self.emit(b"x" * (300 * 1024))
        if message.payload == "a set":
            self.emit({1, 2})
        if message.payload == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        self.state["recent"].append(message.payload)
        self.emit(self.state["recent"])


def test_what_is_emitted_is_a_copy_taken_at_emit_the_same_on_every_replica():
    live, restored = ReplicaMachine(Recent()), ReplicaMachine(Recent())
    live.apply_entry(1, encode_input([(A, 0, [1])]))
    restored.restore(live.snapshot())
    for m in (live, restored):
        m.apply_entry(2, encode_input([(A, 1, [2])]))
    assert list(live.outbox) == list(restored.outbox) == [(0, [[1]]), (1, [[1, 2]])]
    assert live.state_digest() == restored.state_digest()


def test_an_emit_that_cannot_be_sent_is_the_messages_apply_error_on_every_replica():
    m = ReplicaMachine(Recent())
    m.apply_entry(1, encode_input([(A, 0, ["too big", "a set", 3])]))
    assert m.counters["apply_errors"] == 2
    assert list(m.outbox) == [(0, [[3]])]  # only the message that emitted what can be sent
    assert m.component.state == {"recent": [3]}


def test_emit_outside_apply_is_refused_even_on_a_component_a_machine_holds():
    m = ReplicaMachine(Recent())
    m.apply_entry(1, encode_input([(A, 0, [1])]))
    with pytest.raises(RuntimeError, match="inside apply"):
        m.component.emit("from a thread")
    assert m.emitted == 1


def test_an_apply_failing_for_reasons_of_the_process_stops_the_replica():
    from fabric.stateful.machine import ApplyFailed

    m = ReplicaMachine(Recent())
    with pytest.raises(ApplyFailed):
        m.apply_entry(1, encode_input([(A, 0, ["deep"])]))


class Fussy(Log):
    def restore(self, state) -> None:
        raise ValueError("not my format")


def test_a_restore_the_component_refuses_is_a_decode_error():
    m = machine()
    m.apply_entry(1, encode_input([(A, 0, [2])]))
    with pytest.raises(DecodeError, match="could not restore"):
        ReplicaMachine(Fussy()).restore(m.snapshot())
