"""Small helpers shared by the storage tests."""
from __future__ import annotations

import os

from nameservice.raft.types import Entry
from nameservice.storage import codec


def payload(term: int, index: int, size: int = 24) -> bytes:
    """Entry data that names its own term and index, so misplaced entries are caught."""
    return f"{term}:{index}:".encode().ljust(size, b".")


def make_entries(first: int, last: int, term: int, size: int = 24) -> list[Entry]:
    """Entries ``first..last`` (inclusive) of one term."""
    return [Entry(term, i, payload(term, i, size)) for i in range(first, last + 1)]


def segment_paths(data_dir: str) -> list[str]:
    """The log segment files of a directory, oldest first."""
    return sorted(os.path.join(data_dir, n) for n in os.listdir(data_dir) if n.endswith(".log"))


def record_offsets(path: str) -> list[int]:
    """Byte offsets of the records of an intact segment."""
    with open(path, "rb") as f:
        data = f.read()
    return [offset for offset, _ in codec.scan_segment(data, path, last=True).records]


def flip_byte(path: str, offset: int) -> None:
    """Invert one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
