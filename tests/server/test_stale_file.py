"""A node's quorum-less writes on its disk: durable before the reply, refused when corrupt."""
from __future__ import annotations

import os

import pytest

from nameservice import wire
from nameservice.kv import CasResult, KeyValue, StaleBacklogFull
from nameservice.server.stale import STALE_FILE, StaleWrites
from nameservice.storage.errors import CorruptFileError


class Replies:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def __call__(self, identity, rid, status, payload) -> None:
        self.sent.append((identity, rid, status, payload))


def test_replies_wait_for_the_write_to_disk_and_say_whether_the_key_existed(tmp_path):
    writes = StaleWrites(str(tmp_path))
    present = KeyValue(b"b", b"old", 3, 3, 1)
    writes.accept(b"c1", 1, b"a", b"1", None)
    writes.accept(b"c1", 2, b"b", None, present)
    assert not (tmp_path / STALE_FILE).exists()
    replies = Replies()
    writes.flush(replies)
    assert replies.sent == [(b"c1", 1, wire.ST_OK, False), (b"c1", 2, wire.ST_OK, True)]
    assert (tmp_path / STALE_FILE).exists()
    again = StaleWrites(str(tmp_path))
    assert [(p.key, p.value, p.base_mod_revision) for p in again.overlay.pending()] == [
        (b"a", b"1", 0), (b"b", None, 3)]
    assert again.changed.is_set()  # a restarted node replays them


def test_stale_reads_lay_pending_writes_over_the_applied_state(tmp_path):
    writes = StaleWrites(str(tmp_path))
    applied = [KeyValue(b"p/a", b"1", 1, 1, 1), KeyValue(b"p/b", b"2", 2, 2, 1)]
    writes.accept(b"c", 1, b"p/a", None, applied[0])
    writes.accept(b"c", 2, b"p/c", b"3", None)
    assert writes.read(b"p/a", applied[0]) is None
    assert [kv.key for kv in writes.range(b"p/", applied, 0)] == [b"p/b", b"p/c"]
    assert [kv.key for kv in writes.range(b"p/", applied, 1)] == [b"p/b"]


def test_settled_writes_leave_the_file(tmp_path):
    writes = StaleWrites(str(tmp_path))
    writes.accept(b"c", 1, b"k", b"v", None)
    writes.flush(Replies())
    [pending] = writes.overlay.pending()
    writes.settle(pending, CasResult(True, 9, KeyValue(b"k", b"v", 9, 9, 1)))
    writes.persist()
    assert len(StaleWrites(str(tmp_path)).overlay) == 0


def test_a_conflict_is_counted_and_listed_for_the_operator(tmp_path):
    writes = StaleWrites(str(tmp_path))
    writes.accept(b"c", 1, b"k", b"mine", KeyValue(b"k", b"v0", 1, 1, 1))
    [pending] = writes.overlay.pending()
    writes.settle(pending, CasResult(False, 5, KeyValue(b"k", b"theirs", 1, 5, 2)))
    status = writes.status()
    assert status["pending"] == 0 and status["conflicts"] == 1
    assert status["recent_conflicts"] == [
        {"key": "k", "value": "mine", "base_revision": 1, "current_revision": 5}]


def test_a_corrupt_file_stops_the_node_with_its_path(tmp_path):
    writes = StaleWrites(str(tmp_path))
    writes.accept(b"c", 1, b"k", b"v", None)
    writes.flush(Replies())
    path = tmp_path / STALE_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=STALE_FILE):
        StaleWrites(str(tmp_path))


def test_past_the_byte_bound_a_write_is_refused_and_nothing_recorded(tmp_path):
    writes = StaleWrites(str(tmp_path), max_bytes=1000)
    writes.accept(b"c", 1, b"a", b"x" * 500, None)
    with pytest.raises(StaleBacklogFull):
        writes.accept(b"c", 2, b"b", b"x" * 500, None)
    assert [p.key for p in writes.overlay.pending()] == [b"a"]
    assert writes.refused == 1 and writes.status()["refused"] == 1


def test_in_memory_writes_are_answered_at_the_flush_and_read_back_without_a_file():
    writes = StaleWrites(None)
    writes.accept(b"c", 1, b"k", b"v", None)
    replies = Replies()
    writes.flush(replies)
    assert replies.sent == [(b"c", 1, wire.ST_OK, False)] and writes.try_persist()
    assert writes.read(b"k", None).value == b"v" and writes.changed.is_set()
    assert StaleWrites(None).overlay.pending() == []  # nothing outlives the object


def test_a_failed_disk_write_answers_unavailable(tmp_path):
    target = tmp_path / "gone"
    target.mkdir()
    writes = StaleWrites(str(target))
    writes.accept(b"c", 1, b"k", b"v", None)
    os.rmdir(target)
    replies = Replies()
    writes.flush(replies)
    assert [(r[1], r[2]) for r in replies.sent] == [(1, wire.ST_UNAVAILABLE)]
    assert writes.persist_failures == 1
