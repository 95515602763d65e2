"""A name-service client written from docs/ns-protocol.md alone works against a real cluster.

Three daemons as processes (``LocalCluster``); the plain client (``plain_ns_client.py``, no
project import) is pointed at a follower first, so its first write is redirected; it opens a
session, puts, gets, compare-and-swaps, retries a write with the same seq and gets the original
result, keeps a lease, and watches a prefix on a follower — and the project's own client sees
the same store.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from nameservice.client import NameServiceClient
from tests.conformance.plain_ns_client import PlainClient, Refused
from tests.server.conftest import make_cluster  # noqa: F401  (the fixture, used below)


def find_leader(client: PlainClient, addresses: list[str], timeout: float = 10.0) -> str:
    """The address of the node whose STATUS says it leads (waiting for an election)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for address in addresses:
            try:
                status = client.call(4, address=address)
            except (Refused, TimeoutError):
                continue
            if status["role"] == "leader":
                return address
        time.sleep(0.05)
    pytest.fail("no leader elected")


def test_a_plain_client_writes_reads_swaps_leases_and_watches(make_cluster):  # noqa: F811
    cluster = make_cluster(3)
    addresses = list(cluster.addresses.values())
    probe = PlainClient(addresses, attempt_timeout=0.5)
    try:
        leader = find_leader(probe, addresses)
    finally:
        probe.close()
    followers = [a for a in addresses if a != leader]
    client = PlainClient([followers[0], *followers[1:], leader])
    try:
        # A watch of the prefix, served by a follower, from now on.
        watched = client.watch(followers[1], 1, b"conf/", True, 0)

        # A write to a follower is redirected to the leader; the session opens on the way.
        rev1 = client.put(b"conf/a", b"1")
        assert client.redirects >= 1 and client.target == leader
        kv, read_at = client.get(b"conf/a")
        assert kv == [b"conf/a", b"1", rev1, rev1, 1, 0] and read_at >= rev1
        assert client.get(b"conf/missing")[0] is None

        # Compare-and-swap: absent, then by value (a miss returns the current key-value), then
        # by mod_revision.
        ok, rev2, kv = client.cas(b"conf/b", b"x", 2, None)[1:]
        assert ok and kv == [b"conf/b", b"x", rev2, rev2, 1, 0]
        ok, rev, kv = client.cas(b"conf/b", b"y", 0, b"not-x")[1:]
        assert not ok and kv == [b"conf/b", b"x", rev2, rev2, 1, 0]
        ok, rev3, kv = client.cas(b"conf/b", b"y", 0, b"x")[1:]
        assert ok and kv[1] == b"y" and rev3 > rev2
        ok, rev4, kv = client.cas(b"conf/b", b"z", 1, rev3)[1:]
        assert ok and kv[3] == rev4

        # A retried write (same seq, same command) gets the original result, applied once.
        seq = client.seq
        again = client.write_seq(seq, [4, b"conf/b", b"z", 1, rev3, 0])
        assert again == [3, True, rev4, [b"conf/b", b"z", rev2, rev4, 3, 0]]  # 3rd version
        assert client.get(b"conf/b")[0][3] == rev4

        # A lease: granted (TTL raised to the cluster minimum), kept alive, attached, revoked.
        lease, ttl_ms = client.lease_grant(100)
        assert lease > 0 and ttl_ms >= 500
        assert client.lease_keepalive(lease) == ttl_ms
        rev5 = client.put(b"conf/leased", b"L", lease=lease)
        found, deleted, rev6 = client.lease_revoke(lease)[1:]
        assert found and deleted == 1 and rev6 == rev5 + 1
        assert client.lease_keepalive(lease) == 0
        assert client.get(b"conf/leased")[0] is None

        # The project's own client sees the same store, and its write reaches the watch.
        async def fabric_side() -> int:
            async with NameServiceClient(addresses) as ns:
                assert (await ns.get("conf/b")).value == b"z"
                return (await ns.put("conf/c", "from fabric")).revision
        rev7 = asyncio.run(fabric_side())

        # Every change under the prefix, in order, with no gap between pushes.
        events = client.events(followers[1], 1, watched, rev7)
        assert [(t, kv[0], kv[1], kv[3]) for t, kv in events] == [
            (0, b"conf/a", b"1", rev1), (0, b"conf/b", b"x", rev2), (0, b"conf/b", b"y", rev3),
            (0, b"conf/b", b"z", rev4), (0, b"conf/leased", b"L", rev5),
            (1, b"conf/leased", b"", rev6), (0, b"conf/c", b"from fabric", rev7)]
        assert client.call(11, 1, address=followers[1]) is True  # cancelled
    finally:
        client.close()
