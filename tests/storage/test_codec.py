"""The byte formats: what round-trips, and what damage is recognised as damage."""
import pytest

import nameservice.storage as storage
from nameservice.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from nameservice.storage import CorruptFileError, codec


def test_public_names_are_exactly_all():
    public = {n for n in dir(storage) if not n.startswith("_")}
    modules = {"base", "codec", "disk", "errors", "files", "log", "memory", "recovery"}
    assert public - modules == set(storage.__all__)


def test_log_operations_round_trip_through_a_record():
    entries = [Entry(3, 7, b""), Entry(3, 8, b"\xff" * 300)]
    record = codec.frame_ops([codec.pack_entries_op(entries), codec.pack_reset_op(9, 4),
                              codec.pack_commit_op(8)])
    end, payload = codec.read_record(record, 0)
    assert end == len(record)
    assert codec.decode_ops(payload) == [codec.Op(codec.OP_ENTRIES, 7, 3, entries),
                                         codec.Op(codec.OP_RESET, 9, 4),
                                         codec.Op(codec.OP_COMMIT, 8)]


def test_the_crc_covers_the_length_field():
    record = bytearray(codec.frame_ops([codec.pack_commit_op(5)]))
    record += b"\x00" * 8
    record[0] += 1  # a longer length that still fits in the buffer
    assert codec.read_record(bytes(record), 0) == "CRC mismatch"


def test_zeros_are_never_a_record():
    assert "implausible" in codec.read_record(b"\x00" * 64, 0)
    assert codec.find_valid_record(b"\x00" * 4096, 0) is None


def test_an_intact_record_is_found_after_damage():
    good = codec.frame_ops([codec.pack_commit_op(5)])
    assert codec.find_valid_record(b"\x13" * 37 + good + b"\x00" * 5, 0) == 37


def test_hard_state_and_snapshot_files_round_trip():
    hs = HardState(term=2**40, vote=3, commit=17)
    assert codec.decode_hard_state(codec.encode_hard_state(hs), "hs") == hs
    snap = Snapshot(SnapshotMeta(10, 2, (1, 2, 5)), b"image")
    assert codec.decode_snapshot(codec.encode_snapshot(snap), "snap") == snap


def test_a_snapshot_file_is_not_taken_for_a_hard_state_file():
    data = codec.encode_snapshot(Snapshot(SnapshotMeta(1, 1)))
    with pytest.raises(CorruptFileError, match="magic"):
        codec.decode_hard_state(data, "hardstate")
