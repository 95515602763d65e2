"""Byte formats of the storage files: pure functions from values to bytes and back.

Every file starts with an 8-byte header (4-byte magic, little-endian u32 format version) and
holds records framed as::

    u32 length (little-endian) | u32 CRC32 of the 4 length bytes and the payload | payload

A log segment holds any number of records; the hard-state and snapshot files hold exactly one.
A log record's payload is a msgpack array of operations (see ``OP_*``). docs/storage.md has the
byte-level description and the reasons behind it.
"""
from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack

from ..errors import shown
from ..raft.types import Entry, HardState, Snapshot, SnapshotMeta
from .errors import CorruptFileError, CorruptLogError

FILE_HEADER = struct.Struct("<4sI")
RECORD_HEADER = struct.Struct("<II")
LENGTH = struct.Struct("<I")
FORMAT_VERSION = 1
SEGMENT_MAGIC = b"FNLG"
HARD_STATE_MAGIC = b"FNHS"
SNAPSHOT_MAGIC = b"FNSN"

MAX_RECORD_BYTES = 64 << 20
"""Largest log record; larger batches are split over several records."""
MAX_FILE_RECORD_BYTES = (1 << 32) - 1
"""Largest hard-state or snapshot payload (the length field is a u32)."""

OP_ENTRIES = 1
"""``[1, [[term, index, data], ...]]``: consecutive entries; the first replaces any suffix."""
OP_RESET = 2
"""``[2, index, term]``: every entry is discarded; the log restarts after (index, term)."""
OP_COMMIT = 3
"""``[3, commit]``: the commit index reached by the time of this record."""

_packer = msgpack.Packer(use_bin_type=True)
# A log payload starts with a msgpack array header (fixarray of 1..15 ops, or array 16/32), then
# the first op's fixarray header (2 or 3 items). Used to find record starts in a damaged tail.
_RECORD_START = re.compile(rb"(?=.{8}[\x91-\x9f\xdc\xdd])", re.DOTALL)


def pack_entries_op(entries: Sequence[Entry]) -> bytes:
    """One OP_ENTRIES operation (Entry tuples pack as [term, index, data] arrays)."""
    return _packer.pack((OP_ENTRIES, entries))


def pack_reset_op(index: int, term: int) -> bytes:
    """One OP_RESET operation."""
    return _packer.pack((OP_RESET, index, term))


def pack_commit_op(commit: int) -> bytes:
    """One OP_COMMIT operation."""
    return _packer.pack((OP_COMMIT, commit))


def frame(parts: Sequence[bytes]) -> bytes:
    """A record whose payload is the concatenation of ``parts``."""
    length = sum(len(p) for p in parts)
    length_bytes = LENGTH.pack(length)
    crc = zlib.crc32(length_bytes)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join((length_bytes, LENGTH.pack(crc), *parts))


def frame_ops(ops: Sequence[bytes]) -> bytes:
    """A log record holding ``ops`` (already packed operations), in order."""
    return frame((_packer.pack_array_header(len(ops)), *ops))


class Op(NamedTuple):
    """One decoded log operation: ``kind`` is OP_*, ``entries`` only for OP_ENTRIES."""

    kind: int
    index: int = 0  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    term: int = 0
    entries: list[Entry] | None = None


def decode_ops(payload: bytes) -> list[Op]:
    """The operations of a log record payload; ValueError if it is not one we write."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"payload is not msgpack: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise ValueError("payload is not a non-empty array of operations")
    ops = []
    for item in raw:
        if not isinstance(item, list) or not item or not isinstance(item[0], int):
            raise ValueError(f"malformed operation {shown(item)}")
        kind = item[0]
        if kind == OP_ENTRIES and len(item) == 2 and isinstance(item[1], list) and item[1]:
            entries = []
            for e in item[1]:
                if (not isinstance(e, list) or len(e) != 3 or not isinstance(e[0], int)
                        or not isinstance(e[1], int) or not isinstance(e[2], bytes)):
                    raise ValueError(f"malformed entry {shown(e)}")
                entries.append(Entry(e[0], e[1], e[2]))
            ops.append(Op(OP_ENTRIES, entries[0].index, entries[0].term, entries))
        elif kind == OP_RESET and len(item) == 3 and all(isinstance(x, int) for x in item):
            ops.append(Op(OP_RESET, item[1], item[2]))
        elif kind == OP_COMMIT and len(item) == 2 and isinstance(item[1], int):
            ops.append(Op(OP_COMMIT, item[1]))
        else:
            raise ValueError(f"unknown or malformed operation {shown(item)}")
    return ops


def read_record(
    data: bytes, pos: int, max_bytes: int = MAX_RECORD_BYTES
) -> tuple[int, bytes] | str:
    """The record at ``pos``: ``(end offset, payload)``, or a string saying what is wrong."""
    if len(data) - pos < RECORD_HEADER.size:
        return f"partial record header ({len(data) - pos} of {RECORD_HEADER.size} bytes)"
    length, crc = RECORD_HEADER.unpack_from(data, pos)
    if length == 0 or length > max_bytes:
        return f"implausible record length {length}"
    end = pos + RECORD_HEADER.size + length
    if end > len(data):
        return f"record of {length} bytes extends {end - len(data)} bytes past the end of the file"
    payload = data[pos + RECORD_HEADER.size:end]
    if zlib.crc32(payload, zlib.crc32(data[pos:pos + 4])) != crc:
        return "CRC mismatch"
    return end, payload


def find_valid_record(data: bytes, start: int) -> int | None:
    """Offset of the first intact log record that begins at or after ``start``, if any."""
    for match in _RECORD_START.finditer(data, start):
        if isinstance(read_record(data, match.start()), tuple):
            return match.start()
    return None


class SegmentScan(NamedTuple):
    """The readable part of a segment: its records and where the last one ends."""

    records: list[tuple[int, list[Op]]]   # (offset, operations)
    valid_end: int
    torn: str | None                      # why the bytes after valid_end were rejected


def scan_segment(data: bytes, path: str, last: bool) -> SegmentScan:
    """Decode a whole segment.

    Damage is accepted only as a torn tail of the last segment: a bad record followed by no
    intact record. Anything else raises CorruptLogError naming the file and offset.
    """
    check_header(data, SEGMENT_MAGIC, path)
    records: list[tuple[int, list[Op]]] = []
    pos = FILE_HEADER.size
    while pos < len(data):
        result = read_record(data, pos)
        if isinstance(result, str):
            if not last:
                raise CorruptLogError(path, pos, result + " (in a segment that is not the last)")
            following = find_valid_record(data, pos + 1)
            if following is not None:
                raise CorruptLogError(
                    path, pos, f"{result}, followed by an intact record at offset {following}")
            return SegmentScan(records, pos, result)
        end, payload = result
        try:
            records.append((pos, decode_ops(payload)))
        except ValueError as exc:
            raise CorruptLogError(path, pos, f"record passes its CRC but {exc}") from None
        pos = end
    return SegmentScan(records, pos, None)


def check_header(data: bytes, magic: bytes, path: str) -> None:
    """Raise CorruptLogError/CorruptFileError unless ``data`` starts with our header."""
    error = CorruptLogError if magic == SEGMENT_MAGIC else None
    if len(data) < FILE_HEADER.size:
        reason = f"file is {len(data)} bytes, shorter than its {FILE_HEADER.size}-byte header"
    else:
        found, version = FILE_HEADER.unpack_from(data)
        if found != magic:
            reason = f"bad magic {found!r}, expected {magic!r}"
        elif version != FORMAT_VERSION:
            reason = f"format version {version}, this build reads only {FORMAT_VERSION}"
        else:
            return
    if error is CorruptLogError:
        raise CorruptLogError(path, 0, reason)
    raise CorruptFileError(path, reason)


def segment_header() -> bytes:
    """The 8 bytes every segment starts with."""
    return FILE_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION)


def _encode_file(magic: bytes, value: Any) -> bytes:
    return FILE_HEADER.pack(magic, FORMAT_VERSION) + frame((_packer.pack(value),))


def _decode_file(magic: bytes, data: bytes, path: str) -> Any:
    check_header(data, magic, path)
    result = read_record(data, FILE_HEADER.size, MAX_FILE_RECORD_BYTES)
    if isinstance(result, str):
        raise CorruptFileError(path, result)
    end, payload = result
    if end != len(data):
        raise CorruptFileError(path, f"{len(data) - end} unexpected bytes after the record")
    try:
        return msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise CorruptFileError(path, f"record passes its CRC but is not msgpack: {exc}") from None


def encode_hard_state(hs: HardState) -> bytes:
    """The whole content of a hard-state file."""
    return _encode_file(HARD_STATE_MAGIC, (hs.term, hs.vote, hs.commit))


def decode_hard_state(data: bytes, path: str) -> HardState:
    """Parse a hard-state file; CorruptFileError if it is not one."""
    value = _decode_file(HARD_STATE_MAGIC, data, path)
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(x, int) and x >= 0 for x in value)):
        raise CorruptFileError(path, f"malformed hard state {shown(value)}")
    return HardState(*value)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The whole content of a snapshot file."""
    meta = snapshot.meta
    return _encode_file(SNAPSHOT_MAGIC, (meta.index, meta.term, list(meta.voters), snapshot.data,
                                         list(meta.learners)))


def decode_snapshot(data: bytes, path: str) -> Snapshot:
    """Parse a snapshot file; CorruptFileError if it is not one.

    A file written before learners existed holds four fields (no learners).
    """
    value = _decode_file(SNAPSHOT_MAGIC, data, path)
    if isinstance(value, list) and len(value) == 4:
        value = [*value, []]
    if (not isinstance(value, list) or len(value) != 5
            or not all(isinstance(x, int) and x >= 0 for x in value[:2])
            or not all(isinstance(value[i], list)
                       and all(isinstance(v, int) and v > 0 for v in value[i]) for i in (2, 4))
            or not isinstance(value[3], bytes)):
        raise CorruptFileError(path, "malformed snapshot")
    return Snapshot(SnapshotMeta(value[0], value[1], tuple(value[2]), tuple(value[4])), value[3])
