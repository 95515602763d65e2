"""Snapshot streaming benchmark: how fast a leader streams its snapshot to a follower that is
far behind, over loopback, against plain pyzmq moving the same bytes.

For each size (10 and 100 MB by default): a local 3-node cluster (fsync on) with a small
``--snapshot-threshold``; one follower is killed; ``SIZE`` MB of incompressible values are
written, then a few small writes until the leader has compacted past them all; the follower
is started again and catches up by a streamed snapshot. Measured: the stream, by the follower
(its status, ``snapshot_stream.last_received``), from the offer it accepted to the image
verified (whole-image CRC included) and handed to Raft; the leader's CRC of the image before it
offers (``leader_crc_s``, in a worker thread); and the whole catch-up, from starting the
follower until it applied the leader's commit index (process start, install — write, fsync —
and restore of the state machine included).

Anchor, in the same invocation: the same number of bytes in 1 MiB frames from a PUSH socket
in this process to a PULL socket in a child process over TCP loopback (pyzmq, no
acknowledgements, no CRC, no disk), and the ratio of the stream's rate to it.

Usage:
    python benchmarks/ns_snapshot.py [--json] [--sizes 10,100] [--threshold 50]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time

import zmq

from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster, free_ports

MIB = 1 << 20
VALUE_BYTES = 32 << 10


async def _status(ns: NameServiceClient, cluster: LocalCluster, node: int) -> dict:
    return await ns.status(cluster.addresses[node], timeout=5.0)


async def _leader(ns: NameServiceClient, cluster: LocalCluster) -> int:
    while True:
        for node in cluster.ids:
            if cluster.running(node):
                try:
                    if (await _status(ns, cluster, node))["role"] == "leader":
                        return node
                except Exception:
                    pass
        await asyncio.sleep(0.02)


async def _measure(cluster: LocalCluster, megabytes: int) -> dict:
    async with NameServiceClient(cluster.ns_arg, timeout=60.0) as ns:
        leader = await _leader(ns, cluster)
        follower = next(i for i in cluster.ids if i != leader)
        cluster.kill(follower)
        value = os.urandom(VALUE_BYTES)
        count = megabytes * MIB // VALUE_BYTES
        for start in range(0, count, 32):
            # Each value differs (its key in front), so the image does not compress.
            await asyncio.gather(*(ns.put(b"snap/%08d" % i, b"%08d" % i + value[8:])
                                   for i in range(start, min(count, start + 32))))
        snapshots = (await _status(ns, cluster, leader))["counters"]["snapshots"]
        for i in range(10_000):  # small writes until the leader compacts past the values
            await ns.put(b"tick", b"%d" % i)
            if (await _status(ns, cluster, leader))["counters"]["snapshots"] > snapshots:
                break
        st = await _status(ns, cluster, leader)
        commit, term = st["commit_index"], st["term"]
        started = time.perf_counter()
        cluster.start(follower)
        while True:
            try:
                st = await _status(ns, cluster, follower)
            except Exception:
                st = None
            if st is not None and st["applied_index"] >= commit:
                break
            if time.perf_counter() - started > 300:
                raise RuntimeError("the follower did not catch up in 300 s")
            await asyncio.sleep(0.005)
        catch_up_s = time.perf_counter() - started
        got = st["snapshot_stream"]["last_received"]
        c = st["counters"]
        sender = await _status(ns, cluster, got["leader"])  # the leader may have changed
        sent = sender["snapshot_stream"]["last_sent"] or {}
        stream_s = got["stream_s"]
        return {
            "megabytes": megabytes, "image_bytes": got["bytes"],
            "stream_s": stream_s, "stream_mb_s": round(got["bytes"] / 1e6 / stream_s, 1),
            "resumed_from": got["resumed_from"], "leader_crc_s": sent.get("prepare_s"),
            "catch_up_s": round(catch_up_s, 3),
            "chunks": c["snapshot_chunks_received"], "chunks_refused": c["snapshot_chunks_refused"],
            "chunks_resent": sender["counters"]["snapshot_chunks_resent"],
            "snapshots_received": c["snapshot_receives_completed"],
            "leader_changes": sender["term"] - term,
        }


def _pull(port: int, total: int, out) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(f"tcp://127.0.0.1:{port}")
    out.send("ready")
    got, first = 0, 0.0
    while got < total:
        got += len(sock.recv(copy=False))
        if not first:
            first = time.perf_counter()
    out.send(time.perf_counter())
    sock.close(0)
    ctx.term()


def zmq_anchor(total: int) -> float:
    """MB/s of ``total`` bytes in 1 MiB frames, PUSH (here) to PULL (a child process)."""
    port = free_ports(1)[0]
    here, there = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_pull, args=(port, total, there))
    child.start()
    here.recv()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port}")
    data = os.urandom(total)
    view = memoryview(data)
    sock.send(b"")  # the connection is up before the clock starts
    started = time.perf_counter()
    for offset in range(0, total, MIB):
        sock.send(view[offset:offset + MIB])
    ended = here.recv()
    child.join()
    sock.close(0)
    ctx.term()
    return total / 1e6 / (ended - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    parser.add_argument("--sizes", default="10,100", help="snapshot sizes in MB")
    parser.add_argument("--threshold", type=int, default=50, help="--snapshot-threshold")
    args = parser.parse_args()
    report: dict = {"loadavg_before": [round(x, 2) for x in os.getloadavg()], "rows": []}
    with tempfile.TemporaryDirectory(prefix="ns-snapshot-") as tmp:
        for megabytes in (int(s) for s in args.sizes.split(",")):
            with LocalCluster(os.path.join(tmp, f"mb{megabytes}"),
                              extra_args=["--snapshot-threshold", str(args.threshold)]) as cluster:
                cluster.start()
                row = asyncio.run(_measure(cluster, megabytes))
                cluster.stop()
            anchor = zmq_anchor(row["image_bytes"])
            row["zmq_anchor_mb_s"] = round(anchor, 1)
            row["ratio_to_anchor"] = round(row["stream_mb_s"] / anchor, 3)
            report["rows"].append(row)
            if not args.json:
                print(row, file=sys.stderr)
    report["target_mb_s"] = 50
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
