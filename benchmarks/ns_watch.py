"""Watch benchmark: time from a put being acknowledged to its event reaching the watchers.

A local 3-node cluster (fsync on). For each watcher count (1, 100 and 1,000 by default) the
watchers are spread over ``--per-process``-sized worker processes; each worker has one
``NameServiceClient`` and spreads its watches evenly over the three nodes (a client puts each
new watch on the node serving the fewest of its watches), and one coroutine per watch reads
it with ``async for``. The main process then puts ``--events`` keys one after another
(``--interval`` apart) and records when each put was acknowledged; every watcher records when
each event came out of its iterator. Latency = arrival − acknowledgement, both read from the
system-wide monotonic clock. Every watcher must see every put's revision exactly once, in
order: ``missed`` counts revisions a watcher never got, ``repeated`` the ones it got twice
(or out of order).

Usage:
    python benchmarks/ns_watch.py [--json] [--watchers 1,100,1000] [--events 200]
        [--interval 0.01] [--per-process 250] [--node-args "--sync-mode thread"]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import subprocess
import sys
import tempfile
import time

from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster

PREFIX = "bench/"


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


# ---------------------------------------------------------------------------- a worker process


async def _worker(ns_arg: str, watchers: int) -> None:
    """Start ``watchers`` watches, say "ready", then read events until told which revisions
    were written (a JSON line on stdin) and every watch has them (or 30 s passed)."""
    async with NameServiceClient(ns_arg, timeout=30.0) as client:
        deadline = time.monotonic() + 10
        while len(client.channel.connected()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        watches = [client.watch(PREFIX) for _ in range(watchers)]
        for watch in watches:
            await watch.started()
        arrivals: list[list[tuple[int, float]]] = [[] for _ in watches]
        done = asyncio.Event()
        target = [math.inf]
        finished = [0]

        async def read(i: int) -> None:
            record = arrivals[i].append
            clock = time.monotonic
            async for event in watches[i]:
                record((event.revision, clock()))
                if event.revision >= target[0]:
                    break
            finished[0] += 1
            if finished[0] == len(watches):
                done.set()

        readers = [asyncio.ensure_future(read(i)) for i in range(watchers)]
        gc.collect()
        gc.freeze()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        revisions = json.loads(line)["revisions"]
        target[0] = max(revisions)
        for i, got in enumerate(arrivals):  # readers that already have everything stop now
            if got and got[-1][0] >= target[0] and not readers[i].done():
                readers[i].cancel()
                finished[0] += 1
        if finished[0] == len(watches):
            done.set()
        try:
            await asyncio.wait_for(done.wait(), 30)
        except asyncio.TimeoutError:
            pass
        for reader in readers:
            reader.cancel()
        wanted = set(revisions)
        missed = repeated = 0
        latest: dict[int, list[float]] = {}
        for got in arrivals:
            seen: set[int] = set()
            last = 0
            for revision, at in got:
                if revision in seen or revision <= last:
                    repeated += 1
                    continue
                seen.add(revision)
                last = revision
                latest.setdefault(revision, []).append(at)
            missed += len(wanted - seen)
        resumes = sum(w.resumes for w in watches)
        print(json.dumps({"arrivals": latest, "missed": missed, "repeated": repeated,
                          "resumes": resumes}), flush=True)


# ---------------------------------------------------------------------------- the driver


async def _write(ns_arg: str, events: int, interval: float) -> dict[int, float]:
    """Put ``events`` keys one after another; revision → acknowledgement time."""
    acked: dict[int, float] = {}
    async with NameServiceClient(ns_arg, timeout=30.0) as client:
        await client.put("warmup", "-")  # the session is open before the clock starts
        for i in range(events):
            result = await client.put(f"{PREFIX}{i % 16}", b"%d" % i)
            acked[result.revision] = time.monotonic()
            await asyncio.sleep(interval)
    return acked


def run_row(cluster: LocalCluster, watchers: int, events: int, interval: float,
            per_process: int) -> dict:
    """One row: ``watchers`` watchers, ``events`` puts."""
    sizes = [per_process] * (watchers // per_process)
    if watchers % per_process:
        sizes.append(watchers % per_process)
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", cluster.ns_arg, str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for n in sizes]
    try:
        for proc in procs:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a watcher process failed to start: {line!r}")
        acked = asyncio.run(_write(cluster.ns_arg, events, interval))
        order = json.dumps({"revisions": sorted(acked)}) + "\n"
        for proc in procs:
            proc.stdin.write(order)
            proc.stdin.flush()
        reports = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    latencies = sorted(
        (at - acked[int(revision)]) * 1000
        for report in reports for revision, times in report["arrivals"].items()
        for at in times)
    return {
        "watchers": watchers, "events": events,
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "missed": sum(r["missed"] for r in reports),
        "repeated": sum(r["repeated"] for r in reports),
        "max_ms": round(latencies[-1], 2) if latencies else 0.0,
        "processes": len(procs),
        "resumes": sum(r["resumes"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON rows only")
    parser.add_argument("--watchers", default="1,100,1000", help="watcher counts, one row each")
    parser.add_argument("--events", type=int, default=200, help="puts per row")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between puts")
    parser.add_argument("--per-process", type=int, default=250,
                        help="watchers per worker process")
    parser.add_argument("--node-args", default="", help="extra daemon arguments")
    parser.add_argument("--worker", nargs=2, metavar=("NS", "WATCHERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_worker(args.worker[0], int(args.worker[1])))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="ns-watch-bench-") as data_dir, \
            LocalCluster(data_dir, 3, extra_args=args.node_args.split()) as cluster:
        cluster.start()
        for watchers in (int(x) for x in args.watchers.split(",")):
            row = run_row(cluster, watchers, args.events, args.interval, args.per_process)
            rows.append(row)
            if not args.json:
                print(row, file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
