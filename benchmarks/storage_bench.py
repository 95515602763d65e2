"""Throughput of the Raft log storage on a real disk: group commit with 1, 16, 256 entries per
sync, 100-byte entries, fsync on.

    python benchmarks/storage_bench.py [--json] [--dir DIR] [--seconds S]

Each round appends a batch, advances the commit index (as a leader does) and calls sync(), which
costs one fdatasync. ``entries_s`` is appended-and-durable entries per second, ``fsyncs_s`` the
fsyncs per second, ``reopen_s`` the time to open (recover) the log written. A last row
(``"sync": false``) measures append() alone: the CPU cost of
validating, packing and buffering, with no I/O.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from nameservice.raft.types import Entry, HardState
from nameservice.storage import DiskStorage

ENTRY_BYTES = 100
BATCHES = (1, 16, 256)


def run(data_dir: str, batch: int, seconds: float, sync: bool) -> dict:
    storage = DiskStorage(data_dir, max_unsynced_bytes=1 << 30)
    data = b"x" * ENTRY_BYTES
    storage.set_hard_state(HardState(1, 1, 0))
    storage.sync()
    stats = storage.stats
    fsyncs0, syncs0 = stats.fsyncs, stats.syncs
    index = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        entries = [Entry(1, i, data) for i in range(index + 1, index + batch + 1)]
        storage.append(entries)
        index += batch
        if sync:
            storage.set_hard_state(HardState(1, 1, index))
            storage.sync()
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    row = {"batch": batch, "sync": sync, "entries": index, "seconds": round(elapsed, 3),
           "entries_s": round(index / elapsed)}
    if sync:
        fsyncs, syncs = stats.fsyncs - fsyncs0, stats.syncs - syncs0
        row.update(syncs=syncs, fsyncs=fsyncs, fsyncs_s=round(fsyncs / elapsed),
                   us_per_sync=round(elapsed / syncs * 1e6, 1),
                   segments=len([n for n in os.listdir(data_dir) if n.endswith(".log")]))
    storage.close(sync=False)
    if sync:  # recovery: how long a restart takes to read this log back
        start = time.perf_counter()
        DiskStorage(data_dir).close()
        row["reopen_s"] = round(time.perf_counter() - start, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--dir", help="parent directory for the data (default: under /tmp)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each row")
    args = parser.parse_args()
    parent = tempfile.mkdtemp(prefix="fabric-storage-bench-", dir=args.dir)
    rows = []
    try:
        for batch, sync in [(b, True) for b in BATCHES] + [(256, False)]:
            data_dir = os.path.join(parent, f"b{batch}-{'sync' if sync else 'nosync'}")
            rows.append(run(data_dir, batch, args.seconds, sync))
            shutil.rmtree(data_dir)
            if not args.json:
                print(rows[-1], file=sys.stderr)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    report = {"entry_bytes": ENTRY_BYTES, "dir": args.dir or tempfile.gettempdir(),
              "python": platform.python_version(), "cpus": os.cpu_count(), "results": rows}
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
