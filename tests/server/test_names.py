"""The names registry against real daemons and real owner processes killed with SIGKILL."""
from __future__ import annotations

import asyncio
import signal
import sys
import time

import msgpack
import pytest

from nameservice.client import NameServiceClient
from nameservice.names import Endpoint, Names
from tests.server.conftest import statuses
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

SHORT_LEASES = ["--min-lease-ttl", "0.5"]

OWNER = """
import asyncio, sys
from nameservice.client import NameServiceClient
from nameservice.names import Names

async def main(ns, name, endpoint, ttl):
    async with NameServiceClient(ns) as client:
        reg = await Names(client).register(name, endpoint, {"pid": 1}, ttl=float(ttl))
        print("registered", reg.key.decode(), flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


WATCHED_OWNER = """
import asyncio, sys
from nameservice.client import NameServiceClient
from nameservice.names import Names

async def main(ns, name, endpoint, ttl, reregister):
    async with NameServiceClient(ns) as client:
        reg = await Names(client).register(name, endpoint, ttl=float(ttl),
                                           reregister=reregister == "yes")
        print("registered", reg.key.decode(), reg.lease, flush=True)
        while True:  # report each loss, and each return
            await reg.lost.wait()
            print("lost", reg.losses, flush=True)
            if reregister != "yes":  # done watching its lease: still lost?
                await reg._tasks[0]  # its lease watcher
                print("still", reg.lost.is_set(), flush=True)
            while reg.lost.is_set():
                await asyncio.sleep(0.01)
            print("back", reg.losses, reg.lease, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


class NameWatcher:
    """Reads ``watch_name`` in the background; every list it yields, with its arrival time."""

    def __init__(self, names: Names, name: str) -> None:
        self.name = name
        self.lists: list[tuple[float, list[str]]] = []
        self._iterator = names.watch_name(name)
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for endpoints in self._iterator:
            self.lists.append((time.monotonic(), [e.endpoint for e in endpoints]))

    def latest(self) -> list[str] | None:
        return self.lists[-1][1] if self.lists else None

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._iterator.aclose()


@pytest.fixture
async def owners():
    """Start owner processes that register a name; every one is SIGKILLed at teardown."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(ns: str, name: str, endpoint: str, ttl: float = 0.5):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OWNER, ns, name, endpoint, str(ttl),
            stdout=asyncio.subprocess.PIPE)
        procs.append(proc)
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.startswith(b"registered "), line
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_register_resolve_and_watch_name_follow_the_registrations(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as client:
        names = Names(client)
        watcher = NameWatcher(names, "channel/a")
        await async_wait_for(lambda: watcher.latest() == [], 5, "the first, empty list")
        first = await names.register("channel/a", "tcp://10.0.0.1:1", {"kind": "x"}, ttl=1.0)
        await names.register("channel/a/sub", "tcp://not-a", ttl=1.0)  # another name
        await client.put("names/channel/a/garbage", b"\xc1")  # not an entry: skipped
        async with names.register("channel/a", "tcp://10.0.0.2:2", ttl=1.0) as second:
            resolved = await names.resolve("channel/a")
            assert sorted(e.endpoint for e in resolved) == ["tcp://10.0.0.1:1", "tcp://10.0.0.2:2"]
            assert Endpoint("channel/a", "tcp://10.0.0.1:1", {"kind": "x"}, first.key) in resolved
            await async_wait_for(lambda: sorted(watcher.latest()) == [
                "tcp://10.0.0.1:1", "tcp://10.0.0.2:2"], 5, "both endpoints")
            assert second.key.startswith(b"names/channel/a/")
        await async_wait_for(lambda: watcher.latest() == ["tcp://10.0.0.1:1"], 5,
                             "the closed registration to go at once")
        assert [e.endpoint for e in await names.resolve("channel/a")] == ["tcp://10.0.0.1:1"]
        assert msgpack.unpackb((await client.get(first.key)).value) == {
            "endpoint": "tcp://10.0.0.1:1", "meta": {"kind": "x"}}
        await first.close()
        await async_wait_for(lambda: watcher.latest() == [], 5, "the last registration to go")
        await watcher.close()


async def test_a_name_vanishes_within_ttl_plus_1s_after_its_owner_is_killed(make_cluster, owners):
    ttl = 0.5
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as client:
        names = Names(client)
        watcher = NameWatcher(names, "svc/db")
        owner = await owners(cluster.ns_arg, "svc/db", "tcp://127.0.0.1:5000", ttl)
        await async_wait_for(lambda: watcher.latest() == ["tcp://127.0.0.1:5000"], 5,
                             "the registration")
        owner.kill()  # SIGKILL: no deregistration, the keepalives just stop
        killed = time.monotonic()
        await async_wait_for(lambda: watcher.latest() == [], ttl + 3, "the name to vanish")
        gone_after = watcher.lists[-1][0] - killed
        assert gone_after <= ttl + 1.0, f"the name vanished {gone_after:.2f} s after the kill"
        assert await names.resolve("svc/db") == []
        await watcher.close()


async def test_re_registering_on_another_endpoint_is_seen_by_watch_name(make_cluster, owners):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as client:
        watcher = NameWatcher(Names(client), "channel/orders")
        await async_wait_for(lambda: watcher.latest() == [], 5, "the first, empty list")
        old = await owners(cluster.ns_arg, "channel/orders", "tcp://127.0.0.1:6001")
        await async_wait_for(lambda: watcher.latest() == ["tcp://127.0.0.1:6001"], 5, "the first")
        old.send_signal(signal.SIGKILL)
        await owners(cluster.ns_arg, "channel/orders", "tcp://127.0.0.1:6002")
        await async_wait_for(lambda: watcher.latest() == ["tcp://127.0.0.1:6002"], 5,
                             "only the new endpoint")
        seen = [endpoints for _, endpoints in watcher.lists]
        assert seen[0] == [] and seen[1] == ["tcp://127.0.0.1:6001"]
        assert all(set(e) <= {"tcp://127.0.0.1:6001", "tcp://127.0.0.1:6002"} for e in seen)
        await watcher.close()


async def test_watch_name_reloads_when_the_history_no_longer_reaches_back(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES + ["--history-events", "5"])
    async with NameServiceClient(cluster.ns_arg) as client, \
            NameServiceClient(cluster.ns_arg) as writer:
        names = Names(client)

        async def watches() -> dict[int, int]:
            return {i: s["watches"] for i, s in (await statuses(writer, cluster)).items()}

        # Each registration watches its own key, the nodes' own (process/ns-ID) included:
        # the watcher's node is the one whose count grows when it starts.
        async def nodes_registered():
            counts = await watches()
            return counts if sum(counts.values()) == len(cluster.ids) else None
        before = await async_wait_for(nodes_registered, 10, "each node's registration watch")
        watcher = NameWatcher(names, "svc/x")

        async def serving():
            return [i for i, n in (await watches()).items() if n > before.get(i, 0)]
        [frozen] = await async_wait_for(serving, 5, "the node serving the watch")
        reg_a = await Names(writer).register("svc/x", "tcp://a", ttl=2.0)
        await async_wait_for(lambda: watcher.latest() == ["tcp://a"], 5, "the first entry")
        cluster.kill(frozen, signal.SIGSTOP)  # the watch's node goes silent...
        try:
            for i in range(20):  # ...while more changes happen than the others remember
                await writer.put(f"other/{i}", "v")
            reg_b = await Names(writer).register("svc/x", "tcp://b", ttl=2.0)
            await async_wait_for(lambda: sorted(watcher.latest()) == ["tcp://a", "tcp://b"], 10,
                                 "the reloaded list")
        finally:
            cluster.kill(frozen, signal.SIGCONT)
        await reg_a.close()
        await reg_b.close()
        await watcher.close()


async def start_watched_owner(cluster, name: str, endpoint: str, reregister: str):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WATCHED_OWNER, cluster.ns_arg, name, endpoint, "0.5", reregister,
        stdout=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
    assert line[0] == "registered", line
    return proc, line[1].encode(), int(line[2])


async def frozen_past_the_ttl(proc, watcher: NameWatcher) -> None:
    """SIGSTOP ``proc`` until its entry is gone (the cluster expired its lease), then SIGCONT."""
    proc.send_signal(signal.SIGSTOP)
    try:
        await async_wait_for(lambda: watcher.latest() == [], 10, "the lease to expire")
    finally:
        proc.send_signal(signal.SIGCONT)


async def owner_frozen_past_the_ttl(cluster, watcher: NameWatcher, endpoint: str,
                                    reregister: str):
    """An owner process registers ``watcher``'s name, is seen, and is frozen until its lease
    expired; returns ``(proc, key, lease)``. The caller kills ``proc``."""
    proc, key, lease = await start_watched_owner(cluster, watcher.name, endpoint, reregister)
    await async_wait_for(lambda: watcher.latest() == [endpoint], 5, "the registration")
    await frozen_past_the_ttl(proc, watcher)
    return proc, key, lease


async def test_a_registration_whose_lease_expired_registers_itself_again(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as client:
        names = Names(client)
        watcher = NameWatcher(names, "svc/frozen")
        proc, key, lease = await owner_frozen_past_the_ttl(cluster, watcher, "tcp://h:1", "yes")
        try:
            # Resumed, the owner learns its lease is gone and puts the entry back.
            await async_wait_for(lambda: watcher.latest() == ["tcp://h:1"], 10,
                                 "the entry to come back")
            lines = [(await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
                     for _ in range(2)]
            assert lines[0][:2] == ["lost", "1"] and lines[1][:2] == ["back", "1"], lines
            assert int(lines[1][2]) != lease  # a new lease...
            [entry] = await names.resolve("svc/frozen")
            assert entry.key == key  # ...under the same key
            assert (await client.get(key)).lease == int(lines[1][2])
            # And it is kept alive: it outlives several TTLs of the new lease.
            revision = (await client.get(key)).mod_revision
            await async_wait_for(lambda: watcher.lists[-1][0] + 2.0 < time.monotonic(), 5,
                                 "two seconds (four TTLs) without a change")
            assert watcher.latest() == ["tcp://h:1"]
            assert (await client.get(key)).mod_revision == revision
        finally:
            proc.kill()
            await proc.wait()
        await watcher.close()


async def test_with_reregister_off_a_lost_registration_stays_lost(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as client:
        names = Names(client)
        watcher = NameWatcher(names, "svc/once")
        proc, key, _ = await owner_frozen_past_the_ttl(cluster, watcher, "tcp://h:2", "no")
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
            assert line[:2] == ["lost", "1"], line
            before = await client.put("svc/marker", "x")
            line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
            assert line == ["still", "True"], line
            # The registration gave up without putting its entry back: nothing changed.
            assert await client.get(key) is None
            assert watcher.latest() == []
            assert (await client.put("svc/marker", "y")).revision == before.revision + 1
        finally:
            proc.kill()
            await proc.wait()
        await watcher.close()
