"""A Raft-log writer that runs until it is killed: the child process of test_crash.py.

Usage: python crash_writer.py DATA_DIR SEED

It continues whatever log DATA_DIR holds: appends batches, now and then replaces an uncommitted
suffix with entries of a new term (never shortening the log), advances the commit index, syncs,
compacts past the threshold, and after every sync prints one line to stdout:
``last_index last_term commit commit_term term``. Every line therefore describes durable state.
"""
from __future__ import annotations

import random
import sys

from nameservice.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from nameservice.storage import DiskStorage


def payload(term: int, index: int) -> bytes:
    """100 bytes that name their own term and index."""
    return f"{term}:{index}:".encode().ljust(100, b".")


def snapshot_data(index: int) -> bytes:
    return b"state machine at %d" % index


def main(data_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    storage = DiskStorage(data_dir, segment_bytes=32_768, snapshot_threshold=500)
    hs = storage.hard_state
    term, commit = max(hs.term, 1), hs.commit
    out = sys.stdout.buffer
    while True:
        last = storage.last_index()
        if rng.random() < 0.05 and last > commit:
            term += 1  # a new leader overwrites part of the uncommitted suffix
            start = rng.randint(commit + 1, last)
            end = last + rng.randint(0, 20)
        else:
            start = last + 1
            end = last + rng.choice((1, 4, 16, 64))
        storage.append([Entry(term, i, payload(term, i)) for i in range(start, end + 1)])
        last = storage.last_index()
        commit = rng.randint(commit, last)
        storage.set_hard_state(HardState(term, 1, commit))
        storage.sync()
        if storage.should_snapshot(commit):
            meta = SnapshotMeta(commit, storage.term(commit), (1, 2, 3))
            storage.compact(Snapshot(meta, snapshot_data(commit)))
        out.write(b"%d %d %d %d %d\n" % (last, storage.term(last), commit,
                                          storage.term(commit), term))
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
