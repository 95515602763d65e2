"""Recovery from damaged files: a torn tail is cut off, anything else stops the node loudly.

Every test damages the real bytes on disk, then reopens the directory.
"""
import logging
import os

import pytest

from nameservice.raft.types import HardState, Snapshot, SnapshotMeta
from nameservice.storage import CorruptFileError, CorruptLogError, DiskStorage, RecoveryError, codec

from .helpers import flip_byte, make_entries, record_offsets, segment_paths


def write_batches(data_dir, batches, segment_bytes=1 << 20):
    """One synced record per batch of 10 entries; returns the storage's last index."""
    with DiskStorage(data_dir, segment_bytes=segment_bytes) as s:
        for b in range(batches):
            s.append(make_entries(b * 10 + 1, b * 10 + 10, term=1))
            s.sync()
        return s.last_index()


def size(path):
    return os.path.getsize(path)


@pytest.mark.parametrize("cut", [1, 7, 30])
def test_a_partially_written_last_record_is_truncated(data_dir, cut, caplog):
    write_batches(data_dir, 5)
    [path] = segment_paths(data_dir)
    last_record = record_offsets(path)[-1]
    os.truncate(path, size(path) - cut)
    with caplog.at_level(logging.WARNING, logger="nameservice.storage"):
        s = DiskStorage(data_dir)
    assert s.last_index() == 40
    assert size(path) == last_record
    assert "torn tail" in caplog.text and path in caplog.text
    s.append(make_entries(41, 45, term=2))  # the repaired segment takes new records
    s.sync()
    s.close()
    with DiskStorage(data_dir) as s:
        assert s.last_index() == 45 and s.term(45) == 2


def test_a_last_record_with_a_bad_crc_is_truncated(data_dir):
    write_batches(data_dir, 5)
    [path] = segment_paths(data_dir)
    last_record = record_offsets(path)[-1]
    flip_byte(path, size(path) - 3)
    with DiskStorage(data_dir) as s:
        assert s.last_index() == 40
    assert size(path) == last_record


@pytest.mark.parametrize("tail", [b"\x00" * 4096, b"\x00\x00\x00", b"\x10\x00\x00\x00garbage"])
def test_garbage_or_zeros_after_the_last_record_are_truncated(data_dir, tail):
    write_batches(data_dir, 3)
    [path] = segment_paths(data_dir)
    end = size(path)
    with open(path, "ab") as f:
        f.write(tail)
    with DiskStorage(data_dir) as s:
        assert s.last_index() == 30
    assert size(path) == end


def test_a_torn_tail_of_several_records_is_truncated(data_dir):
    write_batches(data_dir, 6)
    [path] = segment_paths(data_dir)
    offsets = record_offsets(path)
    flip_byte(path, offsets[-2] + 10)  # the last two records were one unsynced write
    os.truncate(path, size(path) - 5)
    with DiskStorage(data_dir) as s:
        assert s.last_index() == 40
    assert size(path) == offsets[-2]


def test_a_bad_record_followed_by_an_intact_one_refuses_to_start(data_dir):
    write_batches(data_dir, 5)
    [path] = segment_paths(data_dir)
    bad = record_offsets(path)[2]
    before = size(path)
    flip_byte(path, bad + 12)
    with pytest.raises(CorruptLogError) as caught:
        DiskStorage(data_dir)
    assert (caught.value.path, caught.value.offset) == (path, bad)
    assert "CRC mismatch" in str(caught.value) and path in str(caught.value)
    assert size(path) == before  # nothing was truncated


def test_a_garbled_length_followed_by_an_intact_record_refuses_to_start(data_dir):
    write_batches(data_dir, 5)
    [path] = segment_paths(data_dir)
    bad = record_offsets(path)[1]
    flip_byte(path, bad + 3)  # the length's high byte: the record now "extends past the end"
    with pytest.raises(CorruptLogError) as caught:
        DiskStorage(data_dir)
    assert caught.value.offset == bad


def test_damage_in_a_segment_that_is_not_the_last_refuses_to_start(data_dir):
    write_batches(data_dir, 20, segment_bytes=600)
    first, *rest = segment_paths(data_dir)
    assert rest
    last_record = record_offsets(first)[-1]
    os.truncate(first, size(first) - 2)
    with pytest.raises(CorruptLogError) as caught:
        DiskStorage(data_dir, segment_bytes=600)
    assert (caught.value.path, caught.value.offset) == (first, last_record)


def test_a_bad_segment_header_refuses_to_start(data_dir):
    write_batches(data_dir, 2)
    [path] = segment_paths(data_dir)
    flip_byte(path, 1)
    with pytest.raises(CorruptLogError) as caught:
        DiskStorage(data_dir)
    assert caught.value.offset == 0 and "magic" in caught.value.reason


def test_a_missing_segment_is_a_gap_in_the_index_sequence(data_dir):
    write_batches(data_dir, 20, segment_bytes=600)
    paths = segment_paths(data_dir)
    os.unlink(paths[1])
    with pytest.raises(CorruptLogError) as caught:
        DiskStorage(data_dir, segment_bytes=600)
    assert caught.value.path == paths[2] and "gap" in caught.value.reason


def test_a_record_that_skips_indexes_is_refused(data_dir):
    write_batches(data_dir, 2)
    [path] = segment_paths(data_dir)
    offset = size(path)
    with open(path, "ab") as f:  # intact framing, but entries 21..24 are missing
        f.write(codec.frame_ops([codec.pack_entries_op(make_entries(25, 26, term=1))]))
    with pytest.raises(CorruptLogError) as caught:
        DiskStorage(data_dir)
    assert caught.value.offset == offset and "gap" in caught.value.reason


def test_a_record_with_a_valid_crc_but_foreign_content_is_refused(data_dir):
    write_batches(data_dir, 2)
    [path] = segment_paths(data_dir)
    with open(path, "ab") as f:
        f.write(codec.frame([b"\x92\x07\x01"]))  # an operation kind we never write
    with pytest.raises(CorruptLogError, match="passes its CRC"):
        DiskStorage(data_dir)


def test_a_missing_hard_state_file_refuses_to_start(data_dir):
    write_batches(data_dir, 2)
    os.unlink(os.path.join(data_dir, "hardstate"))
    with pytest.raises(CorruptFileError, match="term and vote would be forgotten"):
        DiskStorage(data_dir)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_garbled_hard_state_file_refuses_to_start(data_dir, damage):
    with DiskStorage(data_dir) as s:
        s.set_hard_state(HardState(5, 1, 0))
    path = os.path.join(data_dir, "hardstate")
    if damage == "flip":
        flip_byte(path, size(path) - 1)
    else:
        os.truncate(path, size(path) - 2 if damage == "truncate" else 0)
    with pytest.raises(CorruptFileError) as caught:
        DiskStorage(data_dir)
    assert caught.value.path == path


def compacted(data_dir):
    """A directory whose first segments were deleted by a snapshot at index 150."""
    with DiskStorage(data_dir, segment_bytes=600) as s:
        for b in range(20):
            s.append(make_entries(b * 10 + 1, b * 10 + 10, term=1))
            s.sync()
        s.set_hard_state(HardState(1, 1, 200))
        s.compact(Snapshot(SnapshotMeta(150, 1), b"image"))
        assert s.stats.segments_deleted > 0


def test_a_garbled_snapshot_file_refuses_to_start(data_dir):
    compacted(data_dir)
    path = os.path.join(data_dir, "snapshot")
    flip_byte(path, size(path) - 2)
    with pytest.raises(CorruptFileError) as caught:
        DiskStorage(data_dir)
    assert caught.value.path == path


def test_a_lost_snapshot_file_after_compaction_is_a_gap(data_dir):
    compacted(data_dir)
    os.unlink(os.path.join(data_dir, "snapshot"))
    with pytest.raises(RecoveryError, match="missing"):
        DiskStorage(data_dir)


def test_a_snapshot_that_conflicts_with_committed_entries_refuses_to_start(data_dir):
    compacted(data_dir)
    with open(os.path.join(data_dir, "snapshot"), "wb") as f:
        f.write(codec.encode_snapshot(Snapshot(SnapshotMeta(160, 9), b"other history")))
    with pytest.raises(RecoveryError, match="committed"):
        DiskStorage(data_dir)


def test_lost_segments_under_a_recorded_commit_index_refuse_to_start(data_dir):
    with DiskStorage(data_dir) as s:
        s.append(make_entries(1, 10, term=1))
        s.set_hard_state(HardState(1, 1, 10))
        s.sync()
        s.set_hard_state(HardState(2, 0, 10))  # rewrites the hard-state file with commit 10
    for path in segment_paths(data_dir):
        os.unlink(path)
    with pytest.raises(RecoveryError, match="beyond the last log entry"):
        DiskStorage(data_dir)
