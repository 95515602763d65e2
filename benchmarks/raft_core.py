"""Committed proposals per second of the pure Raft core: 3 nodes, in-memory delivery, no I/O.

This is the core's own cost — what is left for storage, transport and the state machine is
measured elsewhere. One process drives all three cores on one CPU: the leader proposes a batch,
every node's Ready is handled (entries "persisted" by dropping them, messages handed straight
to the receiver's step), and the loop goes on until the leader has committed every proposal
and every node has applied it.

    python benchmarks/raft_core.py --json
    python benchmarks/raft_core.py --proposals 200000 --batch 1 --batch 1024
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import deque

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nameservice.raft.core import RaftCore  # noqa: E402
from nameservice.raft.types import Config, Role  # noqa: E402


def make_cluster() -> dict[int, RaftCore]:
    voters = (1, 2, 3)
    return {
        i: RaftCore(Config(id=i, voters=voters, max_entries_per_message=8192), random.Random(i))
        for i in voters
    }


def run(proposals: int, batch: int, size: int, in_flight: int) -> dict:
    """Commit ``proposals`` entries of ``size`` bytes, ``batch`` per propose call."""
    nodes = make_cluster()
    inbox: deque = deque()
    applied = {i: 0 for i in nodes}

    def pump() -> None:
        while True:
            progressed = False
            for node_id, core in nodes.items():
                if core.has_ready():
                    rd = core.ready()
                    inbox.extend(rd.early_messages)
                    inbox.extend(rd.messages)
                    if rd.committed:
                        applied[node_id] += len(rd.committed)
                    core.advance(rd)
                    progressed = True
            while inbox:
                m = inbox.popleft()
                nodes[m.to].step(m)
                progressed = True
            if not progressed:
                return

    nodes[1].campaign()
    pump()
    leader = nodes[1]
    assert leader.role is Role.LEADER
    base = dict(applied)
    # Entry data starting with 0x00 belongs to the core; a command starts like a kv one.
    payload = [b"\x01" + os.urandom(size - 1) for _ in range(batch)]
    started = time.perf_counter()
    proposed = 0
    while proposed < proposals:
        # Keep several batches in flight per round, as a busy server would.
        for _ in range(in_flight):
            if proposed >= proposals:
                break
            n = min(batch, proposals - proposed)
            leader.propose_batch(payload[:n])
            proposed += n
        pump()
    elapsed = time.perf_counter() - started
    done = {i: applied[i] - base[i] for i in nodes}
    if any(count < proposals for count in done.values()):
        raise RuntimeError(f"not every node applied every proposal: {done}")
    return {
        "proposals": proposals,
        "batch": batch,
        "in_flight_batches": in_flight,
        "entry_bytes": size,
        "seconds": round(elapsed, 3),
        "committed_per_s": round(proposals / elapsed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--proposals", type=int, default=500_000)
    parser.add_argument("--batch", type=int, action="append", help="proposals per propose call")
    parser.add_argument("--size", type=int, default=100, help="bytes per proposal (default 100)")
    parser.add_argument("--in-flight", type=int, default=4, help="batches proposed per round")
    args = parser.parse_args(argv)
    batches = args.batch or [1, 64, 1024]
    rows = []
    for batch in batches:
        count = args.proposals if batch > 1 else min(args.proposals, 50_000)
        row = run(count, batch, args.size, args.in_flight if batch > 1 else 1)
        rows.append(row)
        if not args.json:
            print(f"batch {batch:5}: {row['committed_per_s']:>9,} committed/s "
                  f"({row['proposals']:,} proposals in {row['seconds']} s)", flush=True)
    if args.json:
        print(json.dumps({"cluster": 3, "cpu": "one core, all nodes in one process",
                          "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
