"""Leases and quorum-less writes against a local 3-node cluster (fsync on).

Rows (``--json`` prints a list of them):

* ``keepalive``: ``--leases`` leases renewed by one client, every renewal pipelined, for
  ``--duration`` s: keepalives/s and per-keepalive latency (answered by the leader from
  memory, no log entry).
* ``expiry``: a lease of ``--ttl`` s with one key; keepalives stop (its owner "dies") and a
  client polls the key (stale reads on every node, every 5 ms): the time from the last
  acknowledged keepalive until every node has deleted the key, minus the TTL. ``--trials``
  times; p50/p99/max of that excess.
* ``stale_put``: quorum-less puts to a follower, one after another: latency to the
  acknowledgement (the node's fsync included) and from the acknowledgement until a
  consistent read through the leader sees the value (the replay).

Usage:
    python benchmarks/ns_lease.py [--json] [--leases 1000] [--duration 3] [--ttl 1.0]
        [--trials 10] [--stale-puts 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster


def _ms(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return round(1000 * sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))],
                 2)


def _row(name: str, values: list[float], **extra) -> dict:
    values = sorted(values)
    return {"row": name, "count": len(values), "p50_ms": _ms(values, 0.5),
            "p99_ms": _ms(values, 0.99), "max_ms": _ms(values, 1.0), **extra}


async def bench_keepalive(ns: NameServiceClient, leases: int, duration: float) -> dict:
    ids = await asyncio.gather(*(ns.lease_grant(60.0) for _ in range(leases)))
    latencies: list[float] = []
    clock = time.perf_counter
    stop_at = clock() + duration

    async def renew(lease_id: int) -> None:
        while clock() < stop_at:
            t = clock()
            await ns.lease_keepalive(lease_id)
            latencies.append(clock() - t)

    started = clock()
    await asyncio.gather(*(renew(i) for i in ids))
    elapsed = clock() - started
    await asyncio.gather(*(ns.lease_revoke(i) for i in ids))
    return _row("keepalive", latencies, leases=leases,
                per_s=round(len(latencies) / elapsed))


async def bench_expiry(ns: NameServiceClient, cluster: LocalCluster, ttl: float,
                       trials: int) -> dict:
    readers = [NameServiceClient(a, timeout=2.0) for a in cluster.addresses.values()]
    for reader in readers:
        await reader.connect()
    excess: list[float] = []
    try:
        for trial in range(trials):
            key = f"bench/expiry/{trial}"
            lease_id = await ns.lease_grant(ttl)
            await ns.put(key, "x", lease=lease_id)
            for _ in range(3):
                await asyncio.sleep(ttl / 3)
                await ns.lease_keepalive(lease_id)
            last = time.perf_counter()  # the owner "dies" right after this keepalive
            while True:
                views = await asyncio.gather(*(r.get(key, consistent=False) for r in readers))
                if all(v is None for v in views):
                    break
                await asyncio.sleep(0.005)
            excess.append(time.perf_counter() - last - ttl)
    finally:
        for reader in readers:
            await reader.close()
    return _row("expiry", excess, ttl_s=ttl, note="time past the TTL until deleted everywhere")


async def bench_stale(cluster: LocalCluster, ns: NameServiceClient, puts: int) -> list[dict]:
    statuses = [await ns.status(a) for a in cluster.addresses.values()]
    follower = next(s["address"] for s in statuses if s["role"] != "leader")
    acked: list[float] = []
    replicated: list[float] = []
    async with NameServiceClient(follower) as one:
        for i in range(puts):
            key, value = f"bench/stale/{i}", f"v{i}"
            t = time.perf_counter()
            await one.put(key, value, consistent=False)
            t_ack = time.perf_counter()
            acked.append(t_ack - t)
            while (kv := await ns.get(key)) is None or kv.value != value.encode():
                await asyncio.sleep(0.001)
            replicated.append(time.perf_counter() - t_ack)
    return [_row("stale_put_ack", acked), _row("stale_put_replicated", replicated)]


async def run(args) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="ns-lease-bench-") as data:
        cluster = LocalCluster(data, 3, extra_args=["--min-lease-ttl", "0.5"])
        try:
            cluster.start()
            async with NameServiceClient(cluster.ns_arg, timeout=30.0) as ns:
                await ns.put("bench/warm", "1")
                rows = [await bench_keepalive(ns, args.leases, args.duration)]
                rows.append(await bench_expiry(ns, cluster, args.ttl, args.trials))
                rows += await bench_stale(cluster, ns, args.stale_puts)
            cluster.stop()
        finally:
            cluster.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--stale-puts", type=int, default=200)
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
