"""Leader election time after a leader crash: Figure 16 of the Raft paper, in simulation.

Conditions of the paper (Ongaro & Ousterhout 2014, §9.3; Ongaro's dissertation §9.4): five
servers; broadcast time (round trip + disk write) about 15 ms — here one-way delays of 4–6 ms
and a 5 ms disk write for every persisted vote or entry; heartbeat interval half the minimum
election timeout; logs arranged so that only 2 of the 4 survivors can win (two followers never
receive the leader's entries); the leader crashes at a random point within its heartbeat
interval after a heartbeat all followers received. The time runs from the crash until every
survivor has heard the new leader (its first AppendRequest or heartbeat). Messages are those
all survivors sent in that time.

    python benchmarks/election.py --json                 # both algorithms, every range
    python benchmarks/election.py --algorithm paper --trials 200

"paper" is the algorithm of the paper (no PreVote, no CheckQuorum, no back-off); "fabric" is
our default configuration (PreVote, CheckQuorum, and a randomized back-off after an election
that produced no leader).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nameservice.raft.messages import AppendRequest, Heartbeat  # noqa: E402
from nameservice.raft.sim.cluster import SimCluster, default_config  # noqa: E402
from nameservice.raft.sim.network import NetworkModel  # noqa: E402
from nameservice.raft.types import Role  # noqa: E402

TICK_US = 10
# One-way delay 4-6 ms (round trip about 10 ms) and a 2.5 ms disk write: an election round
# (candidate persists its vote, request, voter persists its vote, response) takes about 15 ms.
DISK_WRITE_US = 9_000
DELAY_US = (2_000, 4_000)
MS = 1000
CAP_MS = 100_000
RANGES = [
    (150, 150), (150, 151), (150, 155), (150, 175), (150, 200), (150, 300),
    (12, 24), (25, 50), (50, 100), (100, 200),
]
# The paper's published figures (Figure 16 and the text of §9.3), in ms.
PAPER = {
    (150, 155): {"p50_ms": 287, "p99_ms": 1242, "max_ms": 2143},
    (150, 175): {"p50_ms": 141, "p99_ms": 467},
    (150, 200): {"p50_ms": 146, "p99_ms": 352, "max_ms": 513},
    (150, 300): {"p50_ms": 171, "p90_ms": 244, "p99_ms": 415, "max_ms": 603},
    (12, 24): {"mean_ms": 35, "max_ms": 152},
}
ALGORITHMS = {
    "paper": dict(
        pre_vote=False, check_quorum=False, split_vote_backoff=False, defer_to_pre_candidate=False
    ),
    "fabric": dict(
        pre_vote=True, check_quorum=True, split_vote_backoff=True, defer_to_pre_candidate=True
    ),
}


def one_trial(lo_ms: int, hi_ms: int, algorithm: str, seed: int) -> tuple[float | None, int]:
    """Crash a leader once; return (ms until every survivor knows the new leader, messages).

    The time is None when no leader emerged within CAP_MS (identical timeouts, with no
    jitter in the simulation, can split votes forever).
    """
    for attempt in range(100):
        cluster = _settled_cluster(lo_ms, hi_ms, algorithm, seed * 1000 + attempt)
        if cluster is not None:
            return _crash_and_measure(cluster, lo_ms, random.Random(seed))
    raise RuntimeError(f"no stable initial leader in 100 attempts (seed {seed})")


OLD = 1
BEHIND = (4, 5)


def _settled_cluster(lo_ms: int, hi_ms: int, algorithm: str, seed: int) -> SimCluster | None:
    """A cluster led by node 1 whose entries nodes 4 and 5 never received, or None."""
    config = default_config(
        election_timeout_min=lo_ms * MS // TICK_US,
        election_timeout_max=hi_ms * MS // TICK_US,
        heartbeat_interval=lo_ms * MS // TICK_US // 2,
        **ALGORITHMS[algorithm],
    )
    net = NetworkModel(delay_min=DELAY_US[0], delay_max=DELAY_US[1])
    cluster = SimCluster(5, seed, config, net, tick_us=TICK_US, check=False)
    for node in cluster.nodes.values():
        node.disk_delay_us = DISK_WRITE_US
    # Nodes 4 and 5 never get node 1's entries: only nodes 2 and 3 can succeed it.
    cluster.message_filter = lambda m: not (
        m.frm == OLD and m.to in BEHIND and type(m) is AppendRequest and m.entries
    )
    cluster.with_core(OLD, lambda core: core.campaign())
    settled = cluster.run_until(
        2_000 * MS,
        stop=lambda: all(n.core.leader == OLD and n.core.role is Role.FOLLOWER
                         for n in cluster.nodes.values() if n.id != OLD)
        and cluster.nodes[OLD].core.commit_index >= 1,
    )
    return cluster if settled else None


def _crash_and_measure(cluster: SimCluster, lo_ms: int, rng: random.Random) -> tuple[float, int]:
    old = OLD
    heartbeat = lo_ms * MS // TICK_US // 2

    # Crash at a random point of the heartbeat interval following a heartbeat broadcast.
    crash_at: list[int] = []
    sent_after_crash = [0]

    def on_message(m) -> None:
        if not crash_at and m.frm == old and type(m) is Heartbeat:
            at = cluster.now + rng.randrange(heartbeat * TICK_US)
            crash_at.append(at)
            cluster.call_at(at, lambda: cluster.crash(old))
        elif crash_at and cluster.now >= crash_at[0] and m.frm != old:
            sent_after_crash[0] += 1

    cluster.on_message = on_message
    survivors = [n for n in cluster.nodes.values() if n.id != old]

    def elected() -> bool:
        if not crash_at or cluster.now < crash_at[0] or cluster.nodes[old].up:
            return False
        leader = survivors[0].core.leader
        if leader in (0, old):
            return False
        term = cluster.nodes[leader].core.term
        return all(n.core.leader == leader and n.core.term == term for n in survivors)

    if not cluster.run_until(crash_at_us(cluster, crash_at) + CAP_MS * MS, stop=elected):
        return None, sent_after_crash[0]
    return (cluster.now - crash_at[0]) / MS, sent_after_crash[0]


def crash_at_us(cluster: SimCluster, crash_at: list[int]) -> int:
    """The crash time once known; before the first heartbeat, a bound past it."""
    return crash_at[0] if crash_at else cluster.now + 10_000 * MS


def _trial(args: tuple[int, int, str, int]) -> tuple[float, int]:
    return one_trial(*args)


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values))) - 1))
    return sorted_values[index]


def run_row(lo: int, hi: int, algorithm: str, trials: int, pool) -> dict:
    jobs = [(lo, hi, algorithm, seed) for seed in range(trials)]
    results = pool.map(_trial, jobs, chunksize=max(1, trials // 16))
    times = sorted(t for t, _ in results if t is not None)
    unelected = sum(1 for t, _ in results if t is None)
    # An election that never finished counts as the cap in the percentiles.
    times += [float(CAP_MS)] * unelected
    messages = [m for t, m in results if t is not None] or [0]
    row = {
        "algorithm": algorithm,
        "timeout_ms": [lo, hi],
        "trials": trials,
        "p50_ms": round(percentile(times, 0.50), 1),
        "p90_ms": round(percentile(times, 0.90), 1),
        "p99_ms": round(percentile(times, 0.99), 1),
        "max_ms": round(times[-1], 1),
        "mean_ms": round(statistics.fmean(times), 1),
        "messages_min": min(messages),
        "messages_mean": round(statistics.fmean(messages), 1),
        "unelected": unelected,
    }
    if (lo, hi) in PAPER:
        row["paper"] = PAPER[(lo, hi)]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--trials", type=int, default=1000, help="crashes per range (default 1000)")
    parser.add_argument("--algorithm", choices=[*ALGORITHMS, "both"], default="both")
    parser.add_argument("--range", dest="ranges", action="append", metavar="LO-HI",
                        help="only this timeout range, e.g. 150-155 (repeatable)")
    parser.add_argument("--delay-ms", default="2-4", metavar="LO-HI",
                        help="one-way network delay range (default 2-4)")
    parser.add_argument("--disk-ms", type=float, default=9,
                        help="time to persist a vote or entries (default 9)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    global DELAY_US, DISK_WRITE_US
    lo_d, hi_d = (float(x) for x in args.delay_ms.split("-"))
    DELAY_US = (int(lo_d * MS), int(hi_d * MS))
    DISK_WRITE_US = int(args.disk_ms * MS)
    ranges = RANGES
    if args.ranges:
        ranges = [tuple(int(x) for x in r.split("-")) for r in args.ranges]
    algorithms = list(ALGORITHMS) if args.algorithm == "both" else [args.algorithm]
    rows = []
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for algorithm in algorithms:
            for lo, hi in ranges:
                trials = args.trials if (lo, hi) != (150, 150) else max(1, args.trials // 10)
                row = run_row(lo, hi, algorithm, trials, pool)
                rows.append(row)
                if not args.json:
                    print(
                        f"{algorithm:6} {lo:3}-{hi:<3} ms  p50 {row['p50_ms']:7.1f}  "
                        f"p90 {row['p90_ms']:7.1f}  "
                        f"p99 {row['p99_ms']:7.1f}  max {row['max_ms']:7.1f}  msgs mean "
                        f"{row['messages_mean']:5.1f} min {row['messages_min']:3}"
                        + (f"  unelected {row['unelected']}" if row["unelected"] else "")
                        + (f"   paper {row['paper']}" if "paper" in row else ""),
                        flush=True,
                    )
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
