"""Leases with real daemons: keepalive, expiry after the owner dies, leader change, revoke."""
from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import time

import pytest

from nameservice.client import NameServiceClient
from nameservice.errors import LeaseNotFound
from tests.server.conftest import leader_of
from tests.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.slow

SHORT_LEASES = ["--min-lease-ttl", "0.5"]

OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from nameservice.client import NameServiceClient

    async def main():
        async with NameServiceClient(sys.argv[1]) as ns:
            async with ns.keep_alive(float(sys.argv[3])) as lease:
                await ns.put(sys.argv[2], "alive", lease=lease.id)
                print("lease", lease.id, flush=True)
                seen = 0
                while True:
                    await asyncio.sleep(0.02)
                    if lease.renewals != seen:
                        seen = lease.renewals
                        print("renewed", seen, flush=True)

    asyncio.run(main())
    """
)


@pytest.fixture
async def spawn():
    """Start Python child processes; every one is SIGKILLed at teardown."""
    procs = []

    async def start(*args: str):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OWNER, *args, stdout=asyncio.subprocess.PIPE)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def read_until(proc, prefix: bytes, timeout: float) -> bytes:
    """The first line of the child's stdout starting with ``prefix``."""
    async def line_with_prefix():
        line = await proc.stdout.readline()
        if not line:
            pytest.fail(f"the child exited (code {await proc.wait()}) before {prefix!r}")
        return line if line.startswith(prefix) else None
    return await async_wait_for(line_with_prefix, timeout, f"a line starting with {prefix!r}",
                                interval=0)


async def test_a_key_vanishes_within_ttl_plus_1s_after_its_lease_owner_is_killed(
        make_cluster, spawn):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    ttl = 1.0
    owner = await spawn(cluster.ns_arg, "svc/owned", str(ttl))
    await read_until(owner, b"lease", 15.0)
    async with NameServiceClient(cluster.ns_arg) as ns:
        # Renewed past several TTLs: the keepalives hold the key.
        await read_until(owner, b"renewed 6", 15.0)
        assert (await ns.get("svc/owned")).value == b"alive"
        owner.kill()
        killed = time.monotonic()
        await owner.wait()
        await async_wait_for(lambda: _absent(ns, "svc/owned"), ttl + 1.0,
                             "the key of the dead owner's lease to vanish")
        assert time.monotonic() - killed >= ttl * 0.5  # kept until the lease ran out


async def _absent(ns: NameServiceClient, key: str) -> bool:
    return await ns.get(key) is None


async def test_a_kept_alive_lease_survives_a_sigkill_of_the_leader(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as ns:
        async with ns.keep_alive(1.0) as lease:
            await ns.put("svc/kept", "here", lease=lease.id)
            leader = await leader_of(ns, cluster)
            cluster.kill(leader, signal.SIGKILL)
            before = lease.renewals
            # Renewals through the new leader for well over a TTL after the old one died.
            await async_wait_for(lambda: lease.renewals >= before + 9, 15.0,
                                 "keepalives through the new leader")
            assert await leader_of(ns, cluster) != leader
            assert not lease.lost.is_set()
            kv = await ns.get("svc/kept")
            assert kv is not None and kv.lease == lease.id
        # Leaving the block revokes the lease, and its key with it.
        assert await ns.get("svc/kept") is None


async def test_a_leader_frozen_past_the_ttl_expires_nothing_when_it_wakes(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as ns:
        async with ns.keep_alive(1.0) as lease:
            await ns.put("svc/frozen", "here", lease=lease.id)
            old = await leader_of(ns, cluster)
            cluster.kill(old, signal.SIGSTOP)
            try:
                before = lease.renewals
                # The old leader's deadline for the lease passes while it sleeps.
                await async_wait_for(lambda: lease.renewals >= before + 6, 15.0,
                                     "keepalives through a new leader")
            finally:
                cluster.kill(old, signal.SIGCONT)
            before = lease.renewals
            await async_wait_for(lambda: lease.renewals >= before + 6, 15.0,
                                 "keepalives after the old leader woke")
            assert not lease.lost.is_set()
            kv = await ns.get("svc/frozen")
            assert kv is not None and kv.lease == lease.id


async def test_revoke_deletes_every_key_of_the_lease(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as ns:
        lease_id = await ns.lease_grant(30.0)
        await ns.put("r/a", "1", lease=lease_id)
        await ns.put("r/b", "2", lease=lease_id)
        await ns.put("r/c", "3")
        assert await ns.lease_revoke(lease_id) is True
        assert [kv.key for kv in await ns.range("r/")] == [b"r/c"]
        with pytest.raises(LeaseNotFound):
            await ns.lease_keepalive(lease_id)
        assert await ns.lease_revoke(lease_id) is False


async def test_an_unrenewed_lease_expires_and_its_keeper_learns_it_was_lost(make_cluster):
    cluster = make_cluster(extra_args=SHORT_LEASES)
    async with NameServiceClient(cluster.ns_arg) as ns:
        lease_id = await ns.lease_grant(0.1)  # raised to the cluster's minimum
        assert await ns.lease_keepalive(lease_id) == 0.5
        await ns.put("e/k", "v", lease=lease_id)
        await async_wait_for(lambda: _absent(ns, "e/k"), 5.0, "the unrenewed lease to expire")
        with pytest.raises(LeaseNotFound):
            await ns.lease_keepalive(lease_id)
        with pytest.raises(LeaseNotFound):
            await ns.put("e/k", "v", lease=lease_id)
        async with ns.keep_alive(0.5) as lease:
            await ns.lease_revoke(lease.id)  # someone else revokes it
            await asyncio.wait_for(lease.lost.wait(), 5.0)


async def test_the_default_minimum_ttl_is_one_second(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as ns:
        lease_id = await ns.lease_grant(0.5)
        assert await ns.lease_keepalive(lease_id) == 1.0


def test_the_sync_client_keeps_a_lease_alive_and_reports_it_lost(make_cluster):
    from nameservice.client import SyncNameServiceClient

    cluster = make_cluster(extra_args=SHORT_LEASES)
    with SyncNameServiceClient(cluster.ns_arg) as ns:
        with ns.keep_alive(0.5) as lease:
            ns.put("sync/kept", "here", lease=lease.id)
            # Renewed on the client's thread while this one does other things: it outlives
            # many TTLs.
            wait_for(lambda: lease.renewals >= 9, 15, "nine renewals (three TTLs)")
            kv = ns.get("sync/kept")
            assert kv is not None and kv.lease == lease.id
            assert not lease.lost.is_set()
        # Leaving the block revokes the lease, and its key with it.
        assert ns.get("sync/kept") is None
        assert not lease.lost.is_set()

        with ns.keep_alive(0.5) as lease:
            ns.lease_revoke(lease.id)  # someone else revokes it
            assert lease.lost.wait(5), "the keeper did not learn its lease is gone"

        # Closing the client stops the renewals of a lease still kept: it expires.
        kept = ns.keep_alive(0.5).start()
        ns.put("sync/orphan", "x", lease=kept.id)
    with SyncNameServiceClient(cluster.ns_arg) as ns:
        wait_for(lambda: ns.get("sync/orphan") is None, 5, "the unrenewed lease to expire")
