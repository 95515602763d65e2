"""Partitioned state: K replica groups, a producer routing by key, each group's state its own."""
from __future__ import annotations

import signal

import pytest

from fabric.errors import ConfigError
from fabric.ports.partitioned import key_bytes, partition_channel, partition_of
from tests.waiting import wait_for


def test_the_partition_of_a_key_is_fixed_by_the_count_alone():
    # Vectors for other languages: BLAKE2b with an 8-byte digest of the key's bytes (as GNU
    # ``b2sum -l 64`` prints it), read little-endian, modulo K.
    vectors = {b"": "e4a6a0577479b2b4", "orders": "d5acebe867b47f4d", 42: "57b43cf02666687a",
               b"\x00\xff": "b0c72e78c8f09ce4"}
    for key, digest in vectors.items():
        for k in (2, 3, 4, 7):
            assert partition_of(key, k) == int.from_bytes(bytes.fromhex(digest), "little") % k
    assert [partition_of(k, 4) for k in vectors] == [0, 1, 3, 0]
    assert key_bytes(42) == b"42" and key_bytes("é") == "é".encode()
    assert all(partition_of(k, 1) == 0 for k in range(100))
    spread = [partition_of(k, 4) for k in range(4000)]
    assert all(800 < spread.count(p) < 1200 for p in range(4))


def test_partition_channels_and_bad_keys():
    assert partition_channel("orders", 0, 1) == "orders"
    assert partition_channel("orders", 1, 2) == "orders/p1"
    with pytest.raises(ConfigError):
        partition_channel("orders", 2, 2)
    with pytest.raises(ConfigError, match="partition key"):
        partition_of(1.5, 2)  # type: ignore[arg-type]


def test_two_partitions_each_apply_the_keys_that_route_to_them(group):
    for p in range(2):
        group.intermediary(f"inter-{p}", partition_channel(group.channel, p, 2))
    for name in ("r1", "r2", "r3"):
        group.replica(name, "--partitions", "2")
    messages, keys = 6000, 100
    producer = group.fleet.start("keyed", group.fabric(
        "component", "run", "tests.stateful.keyed:main", "--name", "keyed", "--events",
        "--ns", group.ns, "--param", f"channel={group.channel}",
        "--param", f"messages={messages}", "--param", f"keys={keys}"))
    _, sent = producer.wait_event("sent", 60)
    assert sent["partitions"] == 2
    want = [[i for i in range(messages) if partition_of(i % keys, 2) == p] for p in range(2)]

    def applied():
        statuses = [group.status_all(n) for n in ("r1", "r2", "r3")]
        if any(s is None for s in statuses):
            return None
        states = [[r["state"] for r in s] for s in statuses]
        done = all(st[p] == {"count": len(want[p]), "sum": sum(want[p])}
                   for st in states for p in range(2))
        return statuses if done else None
    statuses = wait_for(applied, 60, "each partition to apply its keys")
    for p in range(2):
        assert len({s[p]["state_digest"] for s in statuses}) == 1
        assert {s[p]["partition"] for s in statuses} == {p}

    def leading_processes():  # for each partition, the process whose replica leads it
        found = {n: group.status_all(n) for n in ("r1", "r2", "r3")}
        leads = {p: [n for n, s in found.items() if s and s[p]["role"] == "leader"]
                 for p in range(2)}
        return leads if all(len(v) == 1 for v in leads.values()) \
            and leads[0] != leads[1] else None
    wait_for(leading_processes, 30, "the partitions' leaders to be in different processes")
    producer.signal(signal.SIGTERM)
    assert producer.wait(30) == 0, producer.log_tail()


def test_a_partition_count_that_contradicts_the_declared_one_is_refused(group):
    group.replica("r1", "--partitions", "2")
    proc = group.fleet.start("r2", group.fabric(
        "component", "run", "tests.stateful.counting:Counter", "--replicas", "3",
        "--data", str(group.tmp / "r2"), "--input", group.channel, "--partitions", "3",
        "--name", "counter", "--ns", group.ns))
    assert proc.wait(30) == 1
    log = proc.log_path.read_text()
    assert "has 2 partitions, not 3" in log and "Traceback" not in log, log[-2000:]

