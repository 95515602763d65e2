"""DiskStorage: round trips through real files, restarts, group commit, compaction."""
import os
import threading
import time

import pytest

from nameservice.raft.types import Entry, HardState, Ready, Snapshot, SnapshotMeta
from nameservice.storage import (
    DiskStorage,
    InvalidWriteError,
    RaftStorage,
    StorageClosedError,
    StorageLockedError,
    codec,
)
from nameservice.storage.disk import HARD_STATE_FILE

from .helpers import make_entries, segment_paths


def reopen(storage: DiskStorage, **kwargs) -> DiskStorage:
    storage.close()
    return DiskStorage(storage.data_dir, **kwargs)


def test_disk_storage_satisfies_the_protocol(data_dir):
    with DiskStorage(data_dir) as s:
        assert isinstance(s, RaftStorage)


def test_fresh_directory_recovers_empty(data_dir):
    with DiskStorage(data_dir) as s:
        assert s.initial_state() == (HardState(), Snapshot(), [])
    with DiskStorage(data_dir) as s:
        assert s.initial_state() == (HardState(), Snapshot(), [])


def test_entries_and_hard_state_survive_a_restart(data_dir):
    s = DiskStorage(data_dir)
    s.append(make_entries(1, 50, term=1) + [Entry(2, 51, b""), Entry(2, 52, b"\x00" * 1000)])
    s.set_hard_state(HardState(term=2, vote=3, commit=40))
    s.sync()
    before = s.initial_state()
    s = reopen(s)
    assert s.initial_state() == before
    assert s.entries(51, 53) == [Entry(2, 51, b""), Entry(2, 52, b"\x00" * 1000)]
    s.close()


def test_suffix_replacement_is_durable(data_dir):
    s = DiskStorage(data_dir)
    s.append(make_entries(1, 20, term=1))
    s.sync()
    s.append(make_entries(11, 13, term=2))
    s.sync()
    s = reopen(s)
    assert s.last_index() == 13
    assert [e.term for e in s.entries(9, 14)] == [1, 1, 2, 2, 2]
    s.close()


def test_unsynced_writes_are_lost_in_a_crash_and_synced_ones_are_not(data_dir):
    s = DiskStorage(data_dir)
    s.append(make_entries(1, 5, term=1))
    s.set_hard_state(HardState(1, 1, 5))
    s.sync()
    s.append(make_entries(6, 10, term=1))
    s.set_hard_state(HardState(2, 2, 10))
    assert s.unsynced
    s.close(sync=False)
    with DiskStorage(data_dir) as s:
        assert s.last_index() == 5
        assert s.hard_state == HardState(1, 1, 5)


def test_one_sync_is_one_fsync_for_many_appends_and_hard_states(data_dir):
    with DiskStorage(data_dir) as s:
        s.set_hard_state(HardState(1, 1, 0))
        s.sync()  # the term/vote change costs the atomic file write once
        before = s.stats.fsyncs
        for i in range(1, 101):
            s.append([Entry(1, i, b"x" * 100)])
            s.set_hard_state(HardState(1, 1, i - 1))
        assert s.unsynced
        s.sync()
        assert not s.unsynced
        assert s.stats.fsyncs - before == 1


def test_a_term_or_vote_change_is_written_to_the_hard_state_file(data_dir):
    with DiskStorage(data_dir) as s:
        s.set_hard_state(HardState(term=7, vote=2, commit=0))
        s.sync()
        path = os.path.join(data_dir, HARD_STATE_FILE)
        with open(path, "rb") as f:
            assert codec.decode_hard_state(f.read(), path) == HardState(7, 2, 0)


def test_reaching_the_unsynced_byte_limit_syncs_early(data_dir):
    durable = 0
    with DiskStorage(data_dir, max_unsynced_bytes=10_000) as s:
        for i in range(1, 200):
            fsyncs = s.stats.fsyncs
            s.append([Entry(1, i, b"x" * 100)])
            if s.stats.fsyncs > fsyncs:
                durable = i
        assert 0 < durable < 199
        s.close(sync=False)
    with DiskStorage(data_dir) as s:
        assert s.last_index() == durable


def test_segments_roll_past_the_size_limit_and_all_are_read_back(data_dir):
    s = DiskStorage(data_dir, segment_bytes=2_000)
    for first in range(1, 1001, 50):
        s.append(make_entries(first, first + 49, term=1))
        s.sync()
    assert len(segment_paths(data_dir)) > 5
    s = reopen(s, segment_bytes=2_000)
    assert [e.index for e in s.initial_state().entries] == list(range(1, 1001))
    s.close()


def test_a_batch_larger_than_a_record_is_split_over_records(data_dir, monkeypatch):
    monkeypatch.setattr(codec, "MAX_RECORD_BYTES", 4096)
    s = DiskStorage(data_dir)
    s.append(make_entries(1, 1000, term=1, size=100))
    s.sync()
    s = reopen(s)
    assert s.last_index() == 1000 and s.entries(1000, 1001)[0].data.startswith(b"1:1000:")
    s.close()


def test_compaction_deletes_whole_segments_covered_by_the_snapshot(data_dir):
    s = DiskStorage(data_dir, segment_bytes=2_000)
    for first in range(1, 1001, 50):
        s.append(make_entries(first, first + 49, term=1))
        s.sync()
    s.set_hard_state(HardState(1, 1, 1000))
    s.sync()
    count = len(segment_paths(data_dir))
    s.compact(Snapshot(SnapshotMeta(700, 1, (1, 2, 3)), b"state at 700"))
    assert len(segment_paths(data_dir)) < count
    assert s.stats.segments_deleted == count - len(segment_paths(data_dir))
    s = reopen(s, segment_bytes=2_000)
    state = s.initial_state()
    assert state.snapshot == Snapshot(SnapshotMeta(700, 1, (1, 2, 3)), b"state at 700")
    assert [e.index for e in state.entries] == list(range(701, 1001))
    s.append(make_entries(1001, 1010, term=2))
    s.sync()
    s = reopen(s)
    assert s.last_index() == 1010
    s.close()


def test_install_snapshot_that_conflicts_discards_the_log_durably(data_dir):
    s = DiskStorage(data_dir, segment_bytes=500)
    s.append(make_entries(1, 60, term=1))
    s.sync()
    s.install_snapshot(Snapshot(SnapshotMeta(100, 3, (1, 2)), b"leader image"))
    s.append(make_entries(101, 105, term=3))
    s.sync()
    s = reopen(s, segment_bytes=500)
    state = s.initial_state()
    assert state.snapshot.meta.index == 100
    assert [e.index for e in state.entries] == [101, 102, 103, 104, 105]
    assert state.hard_state.commit == 100
    s.close()


def test_install_snapshot_interrupted_before_its_log_reset_recovers_by_the_snapshot(data_dir):
    s = DiskStorage(data_dir)
    s.append(make_entries(1, 60, term=1))
    s.sync()
    s.close()
    # The state a crash between writing the snapshot file and the log reset leaves behind.
    path = os.path.join(data_dir, "snapshot")
    with open(path, "wb") as f:
        f.write(codec.encode_snapshot(Snapshot(SnapshotMeta(30, 4), b"img")))
    s = DiskStorage(data_dir)
    assert (s.first_index(), s.last_index()) == (31, 30)
    s.append(make_entries(31, 35, term=4))  # must continue the log on disk, not leave a gap
    s.sync()
    s = reopen(s)
    assert [e.index for e in s.initial_state().entries] == [31, 32, 33, 34, 35]
    s.close()


def test_snapshot_operations_refuse_stale_snapshots(data_dir):
    with DiskStorage(data_dir) as s:
        s.append(make_entries(1, 10, term=1))
        s.set_hard_state(HardState(1, 1, 10))
        s.compact(Snapshot(SnapshotMeta(5, 1)))
        with pytest.raises(InvalidWriteError):
            s.compact(Snapshot(SnapshotMeta(5, 1)))
        with pytest.raises(InvalidWriteError):
            s.install_snapshot(Snapshot(SnapshotMeta(4, 1)))


def test_a_second_open_of_the_same_directory_is_refused(data_dir):
    with DiskStorage(data_dir):
        with pytest.raises(StorageLockedError):
            DiskStorage(data_dir)
    DiskStorage(data_dir).close()  # released on close


def test_use_after_close_is_refused(data_dir):
    s = DiskStorage(data_dir)
    s.close()
    with pytest.raises(StorageClosedError):
        s.sync()


def test_leftover_temp_files_are_removed_on_open(data_dir):
    DiskStorage(data_dir).close()
    temp = os.path.join(data_dir, "hardstate.tmp")
    with open(temp, "wb") as f:
        f.write(b"half a hard state")
    DiskStorage(data_dir).close()
    assert not os.path.exists(temp)


def test_save_applies_a_ready_with_snapshot_entries_and_hard_state_in_order(data_dir):
    snap = Snapshot(SnapshotMeta(50, 3, (1, 2, 3)), b"leader image")
    ready = Ready(snapshot=snap, entries=make_entries(51, 55, term=3),
                  hard_state=HardState(3, 2, 53))
    with DiskStorage(data_dir) as s:
        s.append(make_entries(1, 20, term=1))
        s.sync()
        s.save(ready)
        s.sync()
    with DiskStorage(data_dir) as s:
        state = s.initial_state()
        assert state.snapshot == snap and state.hard_state == HardState(3, 2, 53)
        assert [e.index for e in state.entries] == [51, 52, 53, 54, 55]


def test_sync_in_a_worker_thread_while_the_owner_appends_loses_nothing(data_dir):
    s = DiskStorage(data_dir, segment_bytes=4096, max_unsynced_bytes=2048)
    stop = threading.Event()
    worker_syncs = []
    failures = []

    def keep_syncing():
        try:
            while not stop.is_set():
                if s.unsynced:
                    s.sync()
                    worker_syncs.append(s.last_index())
                else:
                    stop.wait(0.0001)
        except Exception as exc:  # reported to the test thread below
            failures.append(exc)

    worker = threading.Thread(target=keep_syncing)
    worker.start()
    deadline = time.monotonic() + 30
    first = 1
    try:  # append until the worker has synced many times in the middle of the appends
        while len(worker_syncs) < 20 and not failures and time.monotonic() < deadline:
            s.append(make_entries(first, first + 9, term=1))
            s.set_hard_state(HardState(1, 1, first))
            first += 10
    finally:
        stop.set()
        worker.join()
    assert not failures and len(worker_syncs) >= 20
    s.sync()
    expected = s.initial_state()
    assert expected.entries[-1].index == first - 1
    s.close(sync=False)
    with DiskStorage(data_dir) as s:
        assert s.initial_state() == expected
