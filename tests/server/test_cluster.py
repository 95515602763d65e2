"""Real daemons on 127.0.0.1: operations, crashes (SIGKILL) and restarts, bad input."""
from __future__ import annotations

import asyncio
import os
import random
import signal

import pytest
import zmq
import zmq.asyncio

from nameservice import wire
from nameservice.client import NameServiceClient, SyncNameServiceClient
from nameservice.errors import RequestRejected
from tests.server.conftest import caught_up, leader_of, statuses
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow


class Workload:
    """Writers putting unique keys and CAS incrementers, recording every acknowledged result."""

    def __init__(self, client: NameServiceClient, writers: int = 4, cassers: int = 4) -> None:
        self.client = client
        self.acked: dict[bytes, bytes] = {}
        self.cas_acked = {i: 0 for i in range(cassers)}  # successful increments per counter
        self.cas_failed_compare = 0
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._writer(w)) for w in range(writers)]
        self._tasks += [asyncio.ensure_future(self._casser(c)) for c in range(cassers)]

    async def _writer(self, w: int) -> None:
        i = 0
        while not self._stop.is_set():
            key, value = b"w/%d/%d" % (w, i), b"%d" % random.getrandbits(32)
            try:
                await self.client.put(key, value)
            except Exception as exc:  # recorded: the test fails on any
                self.errors.append(exc)
                return
            self.acked[key] = value
            i += 1

    async def _casser(self, c: int) -> None:
        key = b"counter/%d" % c
        current = None
        while not self._stop.is_set():
            new = b"%d" % (self.cas_acked[c] + 1)
            try:
                if current is None:
                    result = await self.client.cas(key, new, expect_absent=True)
                else:
                    result = await self.client.cas(key, new, expect_value=current)
            except Exception as exc:
                self.errors.append(exc)
                return
            if not result.succeeded:
                # Only this task writes the key: a failed compare would mean a CAS of ours
                # was applied twice (or lost).
                self.cas_failed_compare += 1
                return
            self.cas_acked[c] += 1
            current = new

    def progress(self) -> int:
        return len(self.acked) + sum(self.cas_acked.values())

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def verify(self, client: NameServiceClient) -> None:
        """Every acknowledged write is present; every counter equals its acknowledged CASes."""
        assert not self.errors, self.errors[:3]
        assert self.cas_failed_compare == 0
        stored = {kv.key: kv.value for kv in await client.range(b"w/")}
        missing = [k for k, v in self.acked.items() if stored.get(k) != v]
        assert not missing, f"{len(missing)} acknowledged writes missing, e.g. {missing[:3]}"
        for c, count in self.cas_acked.items():
            kv = await client.get(b"counter/%d" % c)
            assert kv is not None and int(kv.value) == count
            assert kv.version == count  # one put per successful CAS: none applied twice


async def _progressed(work: Workload, by: int):
    start = work.progress()
    await async_wait_for(lambda: work.progress() >= start + by, 15,
                         f"{by} more acknowledged writes")


async def test_put_get_cas_range_delete(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
        await ns.put("svc/a", "tcp://1")
        assert (await ns.get("svc/a")).value == b"tcp://1"
        assert (await ns.cas("svc/a", "tcp://2", expect_value="tcp://1")).succeeded
        failed = await ns.cas("svc/a", "tcp://3", expect_value="tcp://1")
        assert not failed.succeeded and failed.kv.value == b"tcp://2"
        created = await ns.cas("svc/b", "x", expect_absent=True)
        assert created.succeeded
        # (The nodes register their own names meanwhile: revisions are read, not counted.)
        assert not (await ns.cas("svc/b", "z", expect_mod_revision=created.revision - 1)).succeeded
        assert (await ns.cas("svc/b", "y", expect_mod_revision=created.revision)).succeeded
        assert [kv.key for kv in await ns.range("svc/")] == [b"svc/a", b"svc/b"]
        assert (await ns.delete("svc/a")).deleted == 1
        assert await ns.get("svc/a") is None
        with pytest.raises(RequestRejected):
            await ns.put("", "empty keys are refused")
        # A stale read on every node sees the write once that node has applied it.
        for address in cluster.addresses.values():
            async with NameServiceClient([address]) as one:
                await async_wait_for(lambda: one.get("svc/b", consistent=False), 5, "stale read")


def test_sync_client_works_from_plain_code(make_cluster):
    cluster = make_cluster()
    with SyncNameServiceClient(cluster.ns_arg, timeout=10) as ns:
        ns.put("k", "v")
        assert ns.get("k").value == b"v"


async def test_leader_killed_while_clients_write_and_cas(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=15) as ns:
        work = Workload(ns)
        await _progressed(work, 200)
        leader = await leader_of(ns, cluster)
        cluster.kill(leader)
        await _progressed(work, 200)  # the survivors elected a leader and serve
        cluster.start(leader)
        await _progressed(work, 200)
        await work.stop()
        await async_wait_for(lambda: caught_up(ns, cluster), 15, "the restarted node to catch up")
        await work.verify(ns)
        # The restarted node holds everything too (stale read from it alone).
        async with NameServiceClient([cluster.addresses[leader]]) as old:
            for c, count in work.cas_acked.items():
                assert int((await old.get(b"counter/%d" % c, consistent=False)).value) == count


async def test_follower_killed_and_restarted_catches_up(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=15) as ns:
        work = Workload(ns, writers=2, cassers=2)
        await _progressed(work, 100)
        leader = await leader_of(ns, cluster)
        follower = next(i for i in cluster.ids if i != leader)
        cluster.kill(follower)
        await _progressed(work, 200)
        assert await leader_of(ns, cluster) == leader  # no election was needed
        cluster.start(follower)
        await _progressed(work, 100)
        await work.stop()
        await async_wait_for(lambda: caught_up(ns, cluster), 15, "the follower to catch up")
        await work.verify(ns)


async def test_all_killed_and_restarted_keep_every_acknowledged_write(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=15) as ns:
        work = Workload(ns, writers=3, cassers=3)
        await _progressed(work, 300)
        for node_id in cluster.ids:
            os.kill(cluster.procs[node_id].pid, signal.SIGKILL)
        for node_id in cluster.ids:
            cluster.procs[node_id].wait()
        acked_before = work.progress()
        cluster.start()
        await _progressed(work, 100)  # the restarted cluster serves again
        await work.stop()
        assert work.progress() > acked_before
        await work.verify(ns)


async def test_garbage_frames_are_counted_and_dropped(make_cluster):
    cluster = make_cluster()
    address = cluster.addresses[1]
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"tcp://{address}")
    try:
        async with NameServiceClient([address]) as ns:
            before = (await ns.status(address))["counters"]
            garbage = [
                b"\x00garbage",                              # wrong version
                b"\x01\x01\xc1\xc1",                          # peer kind, not msgpack
                b"\x01\x01" + wire._pack([[99, 1, 2, 3]]),    # peer kind, unknown message
                b"\x01\x02\xc1",                              # client kind, not msgpack
                b"\x01\x03" + wire._pack([]),                 # reply kind sent to a node
                b"\x01\x02" + b"\x00" * (wire.MAX_CLIENT_FRAME + 1),  # over the size limit
            ]
            for frame in garbage:
                await sock.send(frame)
            await sock.send_multipart([b"two", b"frames"])
            await sock.send(wire.frame(wire.REQUEST, [["bad rid", 1]]))   # bad request header
            await sock.send(wire.frame(wire.REQUEST, [[5, wire.OP_GET, 12, True]]))  # bad args
            reply = await asyncio.wait_for(sock.recv(), 5)
            _, body = wire.split_frame(reply, wire.MAX_CLIENT_FRAME)
            assert body[0][:2] == [5, wire.ST_BAD_REQUEST]

            async def counted():
                c = (await ns.status(address))["counters"]
                return (c["bad_peer_frames"] - before["bad_peer_frames"] == 2
                        and c["bad_client_frames"] - before["bad_client_frames"] == 5
                        and c["bad_requests"] - before["bad_requests"] == 2)

            await async_wait_for(counted, 5, "the bad frames to be counted")
            await ns.put("still", "serving")
            assert (await ns.get("still")).value == b"serving"
        assert all(cluster.running(i) for i in cluster.ids)
    finally:
        sock.close(0)
        ctx.term()


async def test_short_election_timeout_recovers_from_a_killed_leader(make_cluster):
    cluster = make_cluster(election_timeout="50-100")
    async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
        await ns.put("a", "1")
        leader = await leader_of(ns, cluster)
        cluster.kill(leader)
        await ns.put("a", "2")
        st = await statuses(ns, cluster)
        assert {s["role"] for s in st.values()} >= {"leader"}
        assert leader not in st


async def test_compacted_log_reaches_a_restarted_follower_as_a_snapshot(make_cluster):
    cluster = make_cluster(extra_args=["--snapshot-threshold", "20"])
    async with NameServiceClient(cluster.ns_arg, timeout=15) as ns:
        leader = await leader_of(ns, cluster)
        follower = next(i for i in cluster.ids if i != leader)
        cluster.kill(follower)
        for i in range(100):  # one entry each: the leader compacts several times
            await ns.put(b"snap/%d" % i, b"%d" % i)
        st = (await statuses(ns, cluster))[leader]
        assert st["counters"]["snapshots"] >= 3
        cluster.start(follower)
        await async_wait_for(lambda: caught_up(ns, cluster), 15,
                             "the follower to install a snapshot")
        async with NameServiceClient([cluster.addresses[follower]]) as one:
            kvs = await one.range(b"snap/", consistent=False)
            assert (await one.status(cluster.addresses[follower]))["counters"][
                "snapshots_installed"] == 1
        assert len(kvs) == 100
        # Restarting the leader itself recovers from its own snapshot and log.
        cluster.kill(leader)
        cluster.start(leader)
        await async_wait_for(lambda: caught_up(ns, cluster), 15, "the old leader to recover")
        async with NameServiceClient([cluster.addresses[leader]]) as one:
            assert len(await one.range(b"snap/", consistent=False)) == 100


async def test_a_retried_write_gets_the_original_result_and_is_applied_once(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
        channel = ns.channel
        opened = await channel.call(wire.OP_WRITE, [[9]])  # OpenSession
        client_id = opened[1]
        cas = [16, client_id, 1, 0, [4, b"once", b"v1", 2, None, 0]]  # create if absent
        first = await channel.call(wire.OP_WRITE, [cas])
        again = await channel.call(wire.OP_WRITE, [cas])  # a retry: same session and seq
        assert first == again and first[1] is True  # the original success, not a failed CAS
        kv = await ns.get("once")
        assert kv.value == b"v1" and kv.version == 1


async def test_a_frozen_leader_is_replaced_and_steps_down_when_it_wakes(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=15, attempt_timeout=0.5) as ns:
        work = Workload(ns, writers=2, cassers=2)
        await _progressed(work, 100)
        leader = await leader_of(ns, cluster)
        cluster.kill(leader, signal.SIGSTOP)  # no connection drops: only timeouts tell
        try:
            await _progressed(work, 100)
            assert await leader_of(ns, cluster) != leader
        finally:
            cluster.kill(leader, signal.SIGCONT)
        await _progressed(work, 100)
        await work.stop()
        await async_wait_for(lambda: caught_up(ns, cluster), 15, "the woken node to rejoin")
        await work.verify(ns)
