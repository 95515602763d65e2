"""MemoryStorage: the rules every storage enforces, and its simulated durability."""
import pytest

from nameservice.raft.types import Entry, HardState, Ready, Snapshot, SnapshotMeta
from nameservice.storage import InvalidWriteError, MemoryStorage, RaftStorage, StorageClosedError

from .helpers import make_entries


def test_memory_storage_satisfies_the_protocol():
    assert isinstance(MemoryStorage(), RaftStorage)


def test_empty_storage_starts_at_index_zero():
    s = MemoryStorage()
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    assert s.initial_state().entries == []


def test_appended_entries_are_readable_by_index_range():
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    assert [e.index for e in s.entries(3, 6)] == [3, 4, 5]
    assert s.term(10) == 1 and s.term(11) is None


def test_an_entry_at_an_existing_index_replaces_it_and_everything_after():
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.append(make_entries(6, 7, term=2))
    assert s.last_index() == 7
    assert [e.term for e in s.entries(1, 8)] == [1] * 5 + [2, 2]


@pytest.mark.parametrize("bad", [
    [Entry(1, 12, b"")],                       # gap after 10
    [Entry(1, 5, b""), Entry(1, 7, b"")],      # not consecutive
    [Entry(1, 11, "text")],                    # data must be bytes
])
def test_appends_that_break_the_log_are_refused(bad):
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    with pytest.raises(InvalidWriteError):
        s.append(bad)
    assert s.last_index() == 10


def test_committed_entries_are_never_replaced():
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.set_hard_state(HardState(term=1, vote=1, commit=6))
    with pytest.raises(InvalidWriteError, match="committed"):
        s.append(make_entries(6, 8, term=2))
    s.append(make_entries(7, 8, term=2))
    assert s.last_index() == 8


@pytest.mark.parametrize("bad", [
    HardState(term=1, vote=2, commit=3),   # term goes back
    HardState(term=2, vote=3, commit=3),   # second vote in the same term
    HardState(term=2, vote=1, commit=2),   # commit goes back
    HardState(term=2, vote=1, commit=11),  # commit past the last entry
])
def test_hard_states_that_break_raft_rules_are_refused(bad):
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.set_hard_state(HardState(term=2, vote=1, commit=3))
    with pytest.raises(InvalidWriteError):
        s.set_hard_state(bad)
    assert s.hard_state == HardState(2, 1, 3)


def test_crash_keeps_only_what_was_synced():
    s = MemoryStorage()
    s.append(make_entries(1, 5, term=1))
    s.set_hard_state(HardState(1, 1, 5))
    s.sync()
    s.append(make_entries(6, 9, term=1))
    s.set_hard_state(HardState(2, 0, 9))
    assert s.unsynced
    after = s.crashed()
    assert after.last_index() == 5
    assert after.hard_state == HardState(1, 1, 5)


def test_compact_drops_covered_entries_and_keeps_the_rest():
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.set_hard_state(HardState(1, 1, 8))
    s.compact(Snapshot(SnapshotMeta(6, 1, (1,)), b"image"))
    assert (s.first_index(), s.last_index(), s.term(6), s.term(5)) == (7, 10, 1, None)
    assert s.crashed().initial_state() == s.initial_state()


@pytest.mark.parametrize("meta", [SnapshotMeta(9, 1), SnapshotMeta(6, 2)])
def test_compact_refuses_uncommitted_or_mismatched_snapshots(meta):
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.set_hard_state(HardState(1, 1, 8))
    with pytest.raises(InvalidWriteError):
        s.compact(Snapshot(meta))


def test_install_keeps_the_log_after_a_matching_entry():
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.install_snapshot(Snapshot(SnapshotMeta(4, 1)))
    assert (s.first_index(), s.last_index()) == (5, 10)


def test_install_discards_a_log_that_does_not_contain_the_snapshot_entry():
    s = MemoryStorage()
    s.append(make_entries(1, 10, term=1))
    s.install_snapshot(Snapshot(SnapshotMeta(8, 3)))
    assert (s.first_index(), s.last_index(), s.term(8)) == (9, 8, 3)
    with pytest.raises(InvalidWriteError):
        s.install_snapshot(Snapshot(SnapshotMeta(8, 3)))


def test_restart_commit_is_at_least_the_snapshot_index():
    s = MemoryStorage()
    s.install_snapshot(Snapshot(SnapshotMeta(20, 2)))
    assert s.crashed().initial_state().hard_state.commit == 20


def test_save_persists_a_ready_in_order():
    s = MemoryStorage()
    ready = Ready(hard_state=HardState(1, 1, 3), entries=make_entries(1, 3, term=1))
    s.save(ready)  # the hard state's commit 3 is valid only once the entries are in
    s.sync()
    assert s.crashed().initial_state().hard_state == HardState(1, 1, 3)


def test_should_snapshot_once_the_threshold_is_passed():
    s = MemoryStorage(snapshot_threshold=100)
    assert not s.should_snapshot(99)
    assert s.should_snapshot(100)


def test_should_snapshot_once_the_applied_entries_hold_the_byte_threshold():
    s = MemoryStorage(snapshot_bytes=1000)
    s.append([Entry(1, i, b"x" * 300) for i in range(1, 6)])
    assert not s.should_snapshot(3)  # 900 bytes applied; the unapplied ones do not count
    assert s.should_snapshot(4)
    s.append([Entry(2, 2, b"y")])  # replaces entries 2..5: 301 bytes left
    s.set_hard_state(HardState(2, 0, 2))
    assert not s.should_snapshot(2)
    s.compact(Snapshot(SnapshotMeta(2, 2, (1,)), b""))
    s.append([Entry(2, i, b"z" * 500) for i in range(3, 5)])
    assert not s.should_snapshot(3) and s.should_snapshot(4)


def test_use_after_close_is_refused():
    s = MemoryStorage()
    s.close()
    with pytest.raises(StorageClosedError):
        s.append(make_entries(1, 1, term=1))
