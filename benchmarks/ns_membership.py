"""Name-service membership benchmark: adding a node to a loaded cluster, the pause in writes
while members change, and what two more voters cost.

* **add_ms** — with 10 MB and 100 MB of state in a 3-node cluster (snapshots every
  ``--snapshot-threshold`` entries, so the new node gets the state as a snapshot): the time
  from ``member add`` (learner) to the learner caught up (within 64 entries) and promoted.
  ``snapshot_mb_s``: the snapshot's bytes over the time the learner took to receive it, from
  the stream's offer to the verified image (as the learner reports it in its status);
  ``installed_s``: from the addition to the learner having applied the snapshot's index
  (process start, join, transfer, install).
* **max_write_gap_ms** — one writer puts one key after another throughout: add a learner,
  promote it, remove a follower, remove the leader; the longest time between two acknowledged
  puts during any change. The target: no gap longer than the election timeout's upper bound.
* **puts_3, puts_5** — puts/s of 64 clients against a 3-node and a 5-node cluster, measured in
  the same invocation, ``--repeats`` times each, interleaved (the anchor is the 3-node
  cluster); the medians, and ``puts_5_over_3`` their ratio. Each row also gives the CPU the
  leader and an average follower spent per put: every node shares this machine's cores, so
  a 5-node cluster spends about L + 4F per put where a 3-node one spends L + 2F.

Usage:
    python benchmarks/ns_membership.py [--json] [--sizes-mb 10,100] [--duration 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

from ns_bench import run_load  # the script directory is on sys.path

from nameservice import wire
from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster

VALUE_BYTES = 10_000


async def _fill(client: NameServiceClient, megabytes: int) -> int:
    """Put ``megabytes`` of values (10 kB each), 64 at a time; the bytes written."""
    value = b"s" * VALUE_BYTES
    count = megabytes * 1_000_000 // VALUE_BYTES
    for start in range(0, count, 64):
        await asyncio.gather(*(client.put(b"state/%08d" % i, value)
                               for i in range(start, min(count, start + 64))))
    return count * VALUE_BYTES


async def _member_row(client: NameServiceClient, node: int) -> dict:
    rows = [m for m in (await client.members())["members"] if m["id"] == node]
    return rows[0] if rows else {}


async def _status(client: NameServiceClient, address: str) -> dict | None:
    try:
        return await client.status(address, timeout=0.5)
    except Exception:
        return None


async def measure_add(cluster: LocalCluster, megabytes: int) -> dict:
    """Fill the cluster, add node 4 (learner), wait until caught up, promote it."""
    async with NameServiceClient(cluster.ns_arg, timeout=120.0) as client:
        size = await _fill(client, megabytes)
        leader_status = [s for s in [await _status(client, a)
                                     for a in cluster.addresses.values()] if s]
        snapshot_at = max(s["applied_index"] for s in leader_status)
        address = cluster.add(4)
        started = time.monotonic()
        await client.member_change(wire.MEMBER_ADD_LEARNER, 4, address, timeout=60.0)
        await asyncio.to_thread(cluster.start, 4)
        installed_at = None
        deadline = started + 300.0
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError("the learner did not catch up in 300 s")
            status = await _status(client, address)
            if installed_at is None and status and status["applied_index"] >= snapshot_at:
                installed_at = time.monotonic()
            row = await _member_row(client, 4)
            if row.get("lag", 1 << 30) <= 64 and installed_at is not None:
                break
            await asyncio.sleep(0.01)
        caught_up = time.monotonic()
        await client.member_change(wire.MEMBER_PROMOTE, 4, timeout=60.0)
        done = time.monotonic()
        status = await _status(client, address) or {}
        stream = (status.get("snapshot_stream") or {}).get("last_received") or {}
        return {"state_bytes": size, "add_ms": round((done - started) * 1000),
                "installed_s": round(installed_at - started, 3),
                "caught_up_s": round(caught_up - started, 3),
                "snapshot_bytes": stream.get("bytes"), "stream_s": stream.get("stream_s"),
                "resumed_from": stream.get("resumed_from"),
                # A resumed stream moved only the bytes after ``resumed_from``.
                "snapshot_mb_s": round((stream["bytes"] - (stream.get("resumed_from") or 0))
                                       / 1e6 / stream["stream_s"], 1)
                if stream.get("stream_s") else None}


async def measure_gaps(cluster: LocalCluster) -> dict:
    """Longest pause between acknowledged puts during each change."""
    async with NameServiceClient(cluster.ns_arg, timeout=30.0) as client:
        acks: list[float] = []
        stop = False

        async def writer() -> None:
            n = 0
            while not stop:
                await client.put(b"gap/%d" % n, b"x")
                acks.append(time.monotonic())
                n += 1

        task = asyncio.ensure_future(writer())
        while len(acks) < 100:
            await asyncio.sleep(0.01)
        gaps = {}

        async def during(name: str, change) -> None:
            start = time.monotonic()
            await change()
            await asyncio.sleep(1.0)  # writes go on after the change
            end = time.monotonic()
            times = [t for t in acks if start <= t <= end]
            gaps[name] = round(max((b - a for a, b in zip(times, times[1:])), default=end - start)
                               * 1000, 1)

        address = cluster.add(5)

        async def add() -> None:
            await client.member_change(wire.MEMBER_ADD_LEARNER, 5, address, timeout=30.0)
            await asyncio.to_thread(cluster.start, 5)  # the writer goes on meanwhile

        async def leader() -> int:
            for node, addr in cluster.addresses.items():
                status = await _status(client, addr)
                if status and status["role"] == "leader":
                    return node
            raise RuntimeError("no leader")

        await during("add_learner", add)
        await during("promote", lambda: client.member_change(wire.MEMBER_PROMOTE, 5,
                                                             timeout=30.0))
        lead = await leader()
        follower = next(n for n in cluster.ids if n not in (lead, 5))
        await during("remove_follower", lambda: client.member_change(
            wire.MEMBER_REMOVE, follower, timeout=30.0))
        await during("remove_leader", lambda: client.member_change(
            wire.MEMBER_REMOVE, lead, timeout=30.0))
        stop = True
        await task
        return gaps


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _leader_id(cluster: LocalCluster) -> int:
    async with NameServiceClient(cluster.ns_arg, timeout=10.0) as client:
        while True:
            for node, address in cluster.addresses.items():
                status = await _status(client, address)
                if status and status["role"] == "leader":
                    return node
            await asyncio.sleep(0.05)


def puts_per_s(root: str, nodes: int, pool, duration: float, workers: int) -> dict:
    """One puts row against a fresh cluster, with the CPU each node spent per put."""
    with LocalCluster(tempfile.mkdtemp(prefix=f"puts{nodes}-", dir=root), nodes) as cluster:
        cluster.start()
        leader = asyncio.run(_leader_id(cluster))
        before = {i: _cpu_s(p.pid) for i, p in cluster.procs.items()}
        row = run_load(pool, cluster.ns_arg, "put", 64, workers, duration, b"v" * 64)
        spent = {i: _cpu_s(p.pid) - before[i] for i, p in cluster.procs.items()}
        cluster.stop()
    puts = row["ops_s"] * duration
    followers = [spent[i] for i in spent if i != leader]
    return {"puts_s": row["ops_s"],
            "leader_cpu_us_per_put": round(spent[leader] / puts * 1e6, 1),
            "follower_cpu_us_per_put": round(statistics.mean(followers) / puts * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    parser.add_argument("--sizes-mb", default="10,100")
    parser.add_argument("--snapshot-threshold", type=int, default=500,
                        help="entries between snapshots")
    parser.add_argument("--snapshot-bytes", type=int, default=4_000_000,
                        help="log bytes between snapshots (puts are batched: 10 MB of state "
                             "is a few dozen entries)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per puts row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="puts rows per cluster size")
    parser.add_argument("--election-timeout", default="150-300")
    args = parser.parse_args()
    lo, hi = (int(x) for x in args.election_timeout.split("-"))
    report: dict = {"election_timeout_ms": [lo, hi], "load_average_before": os.getloadavg(),
                    "cpus": os.cpu_count()}
    node_args = ["--snapshot-threshold", str(args.snapshot_threshold),
                 "--snapshot-bytes", str(args.snapshot_bytes)]
    with tempfile.TemporaryDirectory(prefix="ns-membership-") as tmp:
        adds = {}
        for mb in (int(x) for x in args.sizes_mb.split(",")):
            with LocalCluster(os.path.join(tmp, f"add{mb}"), 3, extra_args=node_args,
                              election_timeout=args.election_timeout) as cluster:
                cluster.start()
                adds[f"{mb}mb"] = asyncio.run(measure_add(cluster, mb))
                if not args.json:
                    print(mb, adds[f"{mb}mb"], file=sys.stderr)
        report["add_ms"] = {k: v["add_ms"] for k, v in adds.items()}
        report["adds"] = adds
        rates = [v["snapshot_mb_s"] for v in adds.values() if v["snapshot_mb_s"]]
        report["snapshot_mb_s"] = min(rates) if rates else None
        with LocalCluster(os.path.join(tmp, "gaps"), 3, extra_args=node_args,
                          election_timeout=args.election_timeout) as cluster:
            cluster.start()
            gaps = asyncio.run(measure_gaps(cluster))
        report["write_gaps_ms"] = gaps
        report["max_write_gap_ms"] = max(gaps.values())
        ctx = multiprocessing.get_context("spawn")
        runs: dict[int, list[dict]] = {3: [], 5: []}
        with ctx.Pool(args.workers) as pool:
            for _ in range(args.repeats):  # interleaved: a load spike hits both sizes alike
                for nodes in (3, 5):
                    runs[nodes].append(puts_per_s(tmp, nodes, pool, args.duration,
                                                  args.workers))
        report["puts_3"] = int(statistics.median(r["puts_s"] for r in runs[3]))
        report["puts_5"] = int(statistics.median(r["puts_s"] for r in runs[5]))
        report["puts_runs"] = {"3": runs[3], "5": runs[5]}
        report["puts_5_over_3"] = round(report["puts_5"] / report["puts_3"], 3)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
