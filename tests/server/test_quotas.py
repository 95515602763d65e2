"""Per-client quotas with a real daemon: one client that takes all it can of watches, leases or
sessions is refused, counted, and leaves every other client working (issue 13: 100,000 watches
made a legitimate ``fabric kv watch`` fail, 99,991 leases blocked every lease grant).

The hostile client speaks the raw protocol over its own DEALER sockets, as an outsider would.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zmq

from nameservice import wire
from nameservice.client import NameServiceClient
from nameservice.kv import LeaseGrantResult, RejectCode, Rejected, SessionOpened
from nameservice.kv.codec import result_from_wire
from nameservice.server.quotas import MAX_SESSIONS_PER_CLIENT
from nameservice.server.watches import MAX_WATCHES, MAX_WATCHES_PER_CLIENT
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

HOUR_MS = 3_600_000


class RawClient:
    """One connection speaking the client protocol directly: batches of requests, replies by
    request id (pushes and heartbeats are read and dropped)."""

    def __init__(self, context: zmq.Context, address: str) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://{address}")
        self._rid = 0

    def call(self, requests: list[list], timeout: float = 60.0) -> list[tuple[int, object]]:
        """Send ``[op, args...]`` requests in frames of at most 10,000; ``(status, payload)``
        of each, in order."""
        rids = []
        for start in range(0, len(requests), 10_000):
            body = []
            for op, *args in requests[start:start + 10_000]:
                self._rid += 1
                rids.append(self._rid)
                body.append([self._rid, op, *args])
            self.socket.send(wire.frame(wire.REQUEST, body))
        replies: dict[int, tuple[int, object]] = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(rids):
            assert self.socket.poll(max(1, int((deadline - time.monotonic()) * 1000))), (
                f"{len(rids) - len(replies)} requests unanswered after {timeout} s")
            kind, body = wire.split_frame(self.socket.recv(), wire.MAX_PEER_FRAME)
            if kind == wire.REPLY:
                for w in body:
                    rid, status, payload = wire.reply_from_wire(w)
                    replies[rid] = (status, payload)
        return [replies[rid] for rid in rids]

    def write(self, commands: list) -> list:
        """WRITE each kv command, at most 2,000 in flight (within a session's window, as the
        client library does); the kv result of each (or ``(status, payload)`` if refused)."""
        out = []
        for start in range(0, len(commands), 2_000):
            chunk = commands[start:start + 2_000]
            for status, payload in self.call([[wire.OP_WRITE, c] for c in chunk]):
                out.append(result_from_wire(payload) if status == wire.ST_OK
                           else (status, payload))
        return out


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


async def test_one_client_full_of_watches_leaves_kv_watch_working(make_cluster, context):
    cluster = make_cluster(nodes=1)
    [address] = cluster.addresses.values()
    hostile = [RawClient(context, address) for _ in range(MAX_WATCHES // MAX_WATCHES_PER_CLIENT)]
    for n, raw in enumerate(hostile):
        replies = raw.call([[wire.OP_WATCH, wid, f"h{n}/".encode(), True, 0]
                            for wid in range(MAX_WATCHES_PER_CLIENT + 1)])
        if n == 0:
            assert [s for s, _ in replies[:-1]] == [wire.ST_OK] * MAX_WATCHES_PER_CLIENT
            assert replies[-1] == (wire.ST_BAD_REQUEST,
                                   f"too many watches for this client "
                                   f"({MAX_WATCHES_PER_CLIENT} on this node)")
    # The last ones met the node's own bound (the node's registration holds a watch too).
    assert replies[-1] == (wire.ST_BAD_REQUEST, "too many watches on this node")
    async with NameServiceClient(address) as ns:
        status = await ns.status(address)
        assert status["watches"] == MAX_WATCHES
        assert status["counters"]["watch_quota_refused"] >= 1
        # The node is full, yet a command-line watcher is served, and sees a change.
        watcher = subprocess.Popen(
            [sys.executable, "-m", "fabric", "kv", "watch", "legit/", "--ns", address],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            async def served():
                return (await ns.status(address))["watches"] == MAX_WATCHES + 1
            await async_wait_for(served, 30, "the command's watch")
            revision = (await ns.put("legit/a", "1")).revision
            assert watcher.stdout.readline().split() == [str(revision), "put", "legit/a", "1"]
        finally:
            watcher.kill()
            watcher.wait()


async def test_one_client_full_of_leases_and_sessions_leaves_grants_and_registrations_working(
        make_cluster, context):
    cluster = make_cluster(nodes=1)
    [address] = cluster.addresses.values()
    raw = RawClient(context, address)
    # Sessions: a connection opens so many per minute, then it is refused.
    opened = raw.write([[9]] * (MAX_SESSIONS_PER_CLIENT + 1))
    assert all(type(r) is SessionOpened for r in opened[:-1])
    assert opened[-1][0] == wire.ST_BAD_REQUEST and "too many sessions" in opened[-1][1]
    # Leases: each session holds at most its quota; ten sessions fill the cluster's 100,000.
    sessions = [r.client_id for r in opened[:10]]
    for n, client_id in enumerate(sessions):
        results = raw.write([[16, client_id, seq, 0, [6, 0, HOUR_MS]]
                             for seq in range(1, 10_002)])
        granted = [r for r in results if type(r) is LeaseGrantResult]
        assert all(type(r) is Rejected and r.code is RejectCode.TOO_MANY_LEASES
                   for r in results if type(r) is not LeaseGrantResult), {
            str(r) for r in results if type(r) is not LeaseGrantResult}
        if n == 0:
            assert len(granted) == 10_000
            assert type(results[-1]) is Rejected
            assert results[-1].code is RejectCode.TOO_MANY_LEASES
            assert "too many leases for this client" in results[-1].message
    async with NameServiceClient(address) as ns:
        status = await ns.status(address)
        assert status["leases"] == 100_000  # the pool is full (the node's own lease included)
        assert status["counters"]["leases_refused"] >= len(sessions)
        assert status["counters"]["session_quota_refused"] == 1
        # A hostile session past its share finds the pool full...
        [refused] = raw.write([[16, sessions[-1], 10_002, 0, [6, 0, HOUR_MS]]])
        assert type(refused) is Rejected and refused.message == "100000 leases exist"
        # ... while another client still gets leases, and a registration goes through.
        granted = subprocess.run(
            [sys.executable, "-m", "fabric", "lease", "grant", "5", "--ns", address],
            capture_output=True, text=True, timeout=60)
        assert granted.returncode == 0, granted.stderr
        from nameservice.names import Names

        async with Names(ns).register("svc/legit", "tcp://127.0.0.1:1"):
            assert [e.endpoint for e in await Names(ns).resolve("svc/legit")] == [
                "tcp://127.0.0.1:1"]
