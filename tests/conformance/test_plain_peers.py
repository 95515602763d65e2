"""A producer and a consumer written from docs/protocol.md alone talk to fabric's own processes.

``plain_peers.py`` imports nothing of the project (checked here). Each mix runs real processes
on 127.0.0.1 — two ``fabric intermediary`` processes, fabric's ports (tests/datapath/procs.py)
on one side and the plain peers on the other — and SIGKILLs an intermediary mid-stream: every
message must be handled exactly once, none flagged redelivered, and the surviving intermediary
must have seen no malformed frame and no peer that did not say GOODBYE.
"""
from __future__ import annotations

import ast
import json
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.datapath.conftest import Cluster, read_line, stats_from, total_records
from tests.datapath.procs import read_records
from tests.waiting import wait_for

HERE = Path(__file__).resolve().parent
# Consumers handle more slowly than producers send, so that each holds batches it has not
# handled when the intermediary dies: the claim round has claims to collect (HOLD with part of
# a batch handled), and batches still queued in the victim are resent.


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.kill_all()


@pytest.mark.parametrize("module", ["plain_peers.py", "plain_ns_client.py"])
def test_the_plain_peers_import_nothing_of_the_project(module):
    tree = ast.parse((HERE / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or ".").split(".")[0] if not node.level else ".")
    assert not imported & {"fabric", "nameservice", "tests", "."}, imported
    assert imported <= {"__future__", "argparse", "json", "os", "signal", "struct", "sys", "time",
                        "msgpack", "zmq", "asyncio", "collections", "dataclasses", "typing"}


def plain(cluster: Cluster, role: str, endpoints: list[str], *extra: str):
    return cluster._spawn([sys.executable, "-m", "tests.conformance.plain_peers", role,
                           "--channel", cluster.channel, "--endpoints", ",".join(endpoints),
                           *extra])


def plain_consumer(cluster: Cluster, endpoints: list[str], name: str, *extra: str):
    out = str(cluster.tmp / f"{name}.bin")
    proc = plain(cluster, "consumer", endpoints, "--out", out, *extra)
    assert read_line(proc, 20, name) == "ready"
    return proc, out


def stats_of(output: str) -> dict:
    """The counters a process reported last: a plain peer prints ``stats {JSON}``, a fabric
    process emits the ``stats`` event."""
    for line in reversed(output.splitlines()):
        if line.startswith("stats "):
            return json.loads(line[len("stats "):])
    return stats_from(output)


def check_exactly_once(outs: list[str], expected: set[int]) -> None:
    records = [r for out in outs for r in read_records(out)]
    counts = Counter(payload for payload, _ in records)
    assert set(counts) == expected, f"{len(expected - set(counts))} messages lost"
    twice = {m: c for m, c in counts.items() if c > 1}
    assert not twice, f"{len(twice)} messages handled more than once"
    assert not any(red for _, red in records), "nothing should be flagged redelivered"


def check_survivor(cluster: Cluster, proc) -> dict:
    stats = stats_of(cluster.stop(proc))
    assert stats["bad_frames"] == 0, stats
    assert stats["peers_expired"] == 0 and stats["peers_left"] >= 3, stats
    return stats


def test_a_plain_producer_feeds_fabric_consumers_through_an_intermediary_kill(cluster):
    count = 4000
    (victim, e1), (survivor, e2) = cluster.intermediary(), cluster.intermediary()
    # Each fabric consumer handles about 600 messages/s (1 ms of asyncio sleep per message).
    consumers = [cluster.consumer([e1, e2], f"consumer{n}", "--delay", "0.001")
                 for n in range(2)]
    outs = [out for _, out in consumers]
    producer = plain(cluster, "producer", [e1, e2], "--count", str(count), "--rate", "2000")
    assert read_line(producer, 20, "plain producer") == "ready"
    wait_for(lambda: total_records(outs) >= count // 4, 60, "a quarter of the messages")
    victim.send_signal(signal.SIGKILL)
    at_kill = total_records(outs)
    stats = stats_of(cluster.finish(producer, timeout=60))  # every message acknowledged
    wait_for(lambda: total_records(outs) >= count, 30, "every message handled")
    for proc, _ in consumers:
        cluster.stop(proc)
    check_exactly_once(outs, set(range(count)))
    assert at_kill < count, "the kill did not happen mid-stream"
    assert stats["intermediaries_lost"] >= 1 and stats["claim_rounds"] >= 1, stats
    assert stats["claim_rounds_timed_out"] == 0 and stats["bad_frames"] == 0, stats
    check_survivor(cluster, survivor)


def test_fabric_feeds_plain_consumers_through_an_intermediary_kill(cluster):
    count = 20_000
    (victim, e1), (survivor, e2) = cluster.intermediary(), cluster.intermediary()
    # One consumer watches its connections with a socket monitor, the other without one; each
    # handles 2,000 messages/s: far below what the producer sends, so batches wait in both
    # intermediaries when one is killed (on a loaded machine a producer slower than its
    # consumers could have nothing unacknowledged there, and no claim round to show).
    consumers = [plain_consumer(cluster, [e1, e2], "monitored", "--rate", "2000"),
                 plain_consumer(cluster, [e1, e2], "unmonitored", "--rate", "2000",
                                "--no-monitor")]
    outs = [out for _, out in consumers]
    producer = cluster.producer([e1, e2], 0, count, "--rate", "10000", "--await-links")
    wait_for(lambda: total_records(outs) >= count // 4, 60, "a quarter of the messages")
    victim.send_signal(signal.SIGKILL)
    at_kill = total_records(outs)
    stats = stats_of(cluster.finish(producer, timeout=60))
    wait_for(lambda: total_records(outs) >= count, 30, "every message handled")
    consumer_stats = [stats_of(cluster.stop(proc)) for proc, _ in consumers]
    check_exactly_once(outs, set(range(count)))
    assert at_kill < count, "the kill did not happen mid-stream"
    assert stats["intermediaries_lost"] >= 1 and stats["claim_rounds"] >= 1, stats
    assert stats["claim_rounds_timed_out"] == 0, stats
    assert all(s["intermediaries_lost"] >= 1 and s["bad_frames"] == 0 for s in consumer_stats)
    assert sum(s["claims_answered"] for s in consumer_stats) >= 1, consumer_stats
    check_survivor(cluster, survivor)
