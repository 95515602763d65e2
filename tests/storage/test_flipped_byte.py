"""A byte flipped anywhere in the middle of a log segment or of a snapshot file (issue 13) is
found by its record's CRC when the directory is opened, and reported with the file and the
offset; the node does not start, so nothing damaged is ever applied. (A torn *last* record
of the last segment is the one damage that is cut off instead: it cannot be told from a write
that never completed; test_recovery.py covers it.)"""
from __future__ import annotations

import os
import shutil

import pytest

from nameservice.raft.types import HardState, Snapshot, SnapshotMeta
from nameservice.storage import CorruptFileError, CorruptLogError, DiskStorage

from .helpers import flip_byte, make_entries, record_offsets, segment_paths


def _fresh(template: str, into: str) -> str:
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(template, into)
    return into


def test_a_byte_flipped_anywhere_in_a_middle_record_of_a_segment_is_refused(tmp_path):
    template = str(tmp_path / "template")
    with DiskStorage(template) as s:
        for b in range(5):
            s.append(make_entries(b * 10 + 1, b * 10 + 10, term=1))
            s.sync()
    [path] = segment_paths(template)
    offsets = record_offsets(path)
    start, end = offsets[2], offsets[3]  # a whole record with intact records after it
    for offset in range(start, end):
        data_dir = _fresh(template, str(tmp_path / "copy"))
        damaged = os.path.join(data_dir, os.path.basename(path))
        flip_byte(damaged, offset)
        with pytest.raises(CorruptLogError) as caught:
            DiskStorage(data_dir)
        assert caught.value.path == damaged and caught.value.offset == start, offset


def test_a_byte_flipped_anywhere_in_a_snapshot_file_is_refused(tmp_path):
    template = str(tmp_path / "template")
    with DiskStorage(template, segment_bytes=600) as s:
        for b in range(20):
            s.append(make_entries(b * 10 + 1, b * 10 + 10, term=1))
            s.sync()
        s.set_hard_state(HardState(1, 1, 200))
        s.compact(Snapshot(SnapshotMeta(150, 1, (1, 2, 3)), b"the state machine's image" * 8))
    size = os.path.getsize(os.path.join(template, "snapshot"))
    for offset in range(size):
        data_dir = _fresh(template, str(tmp_path / "copy"))
        damaged = os.path.join(data_dir, "snapshot")
        flip_byte(damaged, offset)
        with pytest.raises(CorruptFileError) as caught:
            DiskStorage(data_dir, segment_bytes=600)
        assert caught.value.path == damaged, offset
