"""Watches against real daemons: ordered, gap-free, duplicate-free across node failures."""
from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nameservice.client import NameServiceClient, SyncNameServiceClient, Watch
from nameservice.errors import Compacted
from tests.server.conftest import caught_up, leader_of
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

FABRIC = str(Path(sys.executable).with_name("fabric"))


class Collector:
    """Reads a watch in the background, recording (kind, key, revision) of every event."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[tuple[str, bytes, int]] = []
        self.error: BaseException | None = None
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.watch:
                self.events.append((event.kind, event.kv.key, event.revision))
        except Exception as exc:  # recorded: the test checks it
            self.error = exc

    def revisions(self) -> list[int]:
        return [rev for _, _, rev in self.events]

    async def close(self) -> None:
        await self.watch.close()
        await self._task


async def all_connected(client: NameServiceClient) -> None:
    await async_wait_for(lambda: len(client.channel.connected()) == 3, 10, "links to every node")


def node_of(cluster, watch: Watch) -> int:
    return next(i for i, a in cluster.addresses.items() if a == watch.address)


async def write_while(client: NameServiceClient, stop: asyncio.Event, acked: list[int],
                      prefix: str = "w/") -> None:
    """Put keys one after another until ``stop``; record each acknowledged revision."""
    i = 0
    while not stop.is_set():
        result = await client.put(f"{prefix}{i % 7}", str(i))
        acked.append(result.revision)
        i += 1


async def test_watch_sees_puts_and_deletes_in_order_with_their_revisions(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as client:
        key_watch = client.watch("svc/a", prefix=False)
        prefix = Collector(client.watch("svc/"))
        keyed = Collector(key_watch)
        await prefix.watch.started()
        await key_watch.started()
        r1 = (await client.put("svc/a", "1")).revision
        r2 = (await client.put("svc/b", "2")).revision
        await client.put("other/x", "no")
        r3 = (await client.delete("svc/a")).revision
        await async_wait_for(lambda: len(prefix.events) == 3 and len(keyed.events) == 2, 5,
                             "the events")
        assert prefix.events == [("put", b"svc/a", r1), ("put", b"svc/b", r2),
                                 ("delete", b"svc/a", r3)]
        assert keyed.events == [("put", b"svc/a", r1), ("delete", b"svc/a", r3)]
        await prefix.close()
        await keyed.close()
        assert prefix.error is None and keyed.error is None


async def test_watch_from_an_old_revision_replays_exactly_the_missed_events(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as client:
        revs = [(await client.put(f"k/{i}", str(i))).revision for i in range(10)]
        await client.put("x/unrelated", "-")
        late = Collector(client.watch("k/", start_revision=revs[4]))
        await async_wait_for(lambda: len(late.events) == 6, 5, "the replay")
        assert late.revisions() == revs[4:]
        assert [key for _, key, _ in late.events] == [b"k/%d" % i for i in range(4, 10)]
        live = (await client.put("k/new", "v")).revision
        await async_wait_for(lambda: len(late.events) == 7, 5, "the live event after the replay")
        assert late.revisions() == revs[4:] + [live]
        await late.close()


async def test_watchers_see_every_change_in_order_across_a_sigkill_of_their_node(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as client:
        await all_connected(client)
        # A client spreads its watches over the nodes: one watch on each.
        watchers = [Collector(client.watch("w/")) for _ in range(3)]
        for c in watchers:
            await c.watch.started()
        assert {node_of(cluster, c.watch) for c in watchers} == set(cluster.ids)
        leader = await leader_of(client, cluster)
        victim = next(c for c in watchers if node_of(cluster, c.watch) == leader)
        acked: list[int] = []
        stop = asyncio.Event()
        writer = asyncio.ensure_future(write_while(client, stop, acked))
        await async_wait_for(lambda: len(acked) >= 30, 10, "writes before the kill")
        cluster.kill(leader)  # SIGKILL the leader, which serves one of the watches
        count = len(acked)
        await async_wait_for(lambda: len(acked) >= count + 30, 15, "writes after the failover")
        stop.set()
        await writer
        await async_wait_for(lambda: all(len(c.events) >= len(acked) for c in watchers), 10,
                             "every watcher to see every write")
        for c in watchers:
            revisions = c.revisions()
            assert revisions == sorted(set(revisions)), "repeated or out of order"
            assert revisions == acked  # the only writer: every change is one of its puts
            assert c.error is None
        assert victim.watch.resumes >= 1 and node_of(cluster, victim.watch) != leader
        for c in watchers:
            await c.close()


async def test_a_frozen_node_is_left_after_its_progress_pushes_stop(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as client:
        leader = await leader_of(client, cluster)
        await all_connected(client)
        watchers = [Collector(client.watch("w/")) for _ in range(3)]
        for c in watchers:
            await c.watch.started()
        follower_watch = next(c for c in watchers if node_of(cluster, c.watch) != leader)
        frozen = node_of(cluster, follower_watch.watch)
        cluster.kill(frozen, signal.SIGSTOP)  # alive, connected, silent
        try:
            revs = [(await client.put(f"w/{i}", "v")).revision for i in range(5)]
            await async_wait_for(lambda: follower_watch.revisions() == revs, 10,
                                 "the watch to resume elsewhere and get the events")
            assert node_of(cluster, follower_watch.watch) != frozen
        finally:
            cluster.kill(frozen, signal.SIGCONT)
        for c in watchers:
            await c.close()


async def test_a_node_that_loses_its_leader_sends_its_watchers_away_and_nothing_is_lost(
        make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as client:
        await all_connected(client)
        watch = Collector(client.watch("w/"))
        await watch.watch.started()
        first = (await client.put("w/a", "1")).revision
        await async_wait_for(lambda: watch.revisions() == [first], 5, "the first event")
        alone = node_of(cluster, watch.watch)
        others = [i for i in cluster.ids if i != alone]
        for i in others:
            cluster.kill(i, signal.SIGSTOP)  # the watched node is left without a majority
        try:
            async def dropped():
                status = await client.status(cluster.addresses[alone], timeout=0.5)
                return status["watches"] == 0 and status["counters"]["watches_cancelled"] >= 1
            await async_wait_for(dropped, 10, "the leaderless node to drop its watch")
        finally:
            for i in others:
                cluster.kill(i, signal.SIGCONT)
        revs = [first] + [(await client.put(f"w/{i}", "v")).revision for i in range(5)]
        await async_wait_for(lambda: watch.revisions() == revs, 10, "every event after the heal")
        assert watch.watch.resumes >= 1
        await watch.close()


async def test_a_watcher_that_reads_slowly_pauses_and_resumes_without_loss(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as client:
        watch = client.watch("slow/", max_queued=20)
        await watch.started()
        results = await asyncio.gather(*(client.put(f"slow/{i}", str(i)) for i in range(300)))
        revs = sorted(r.revision for r in results)
        got = []
        async for event in watch:  # read only now: the queue overflowed long ago
            got.append(event.revision)
            if len(got) == len(revs):
                break
        assert got == revs
        assert watch.resumes >= 1
        await watch.close()


async def test_a_watch_older_than_every_nodes_history_fails_with_compacted(make_cluster):
    cluster = make_cluster(extra_args=["--history-events", "5"])
    async with NameServiceClient(cluster.ns_arg) as client:
        for i in range(20):
            await client.put(f"c/{i}", "v")
        # A follower still behind revision 3 would rightly serve the watch from its future.
        await async_wait_for(lambda: caught_up(client, cluster), 10, "every node to apply the puts")
        watch = client.watch("c/", start_revision=3)
        with pytest.raises(Compacted) as info:
            async for _ in watch:
                pass
        assert info.value.revision == 3 and info.value.oldest > 3
        await watch.close()
    cli = subprocess.run([FABRIC, "kv", "watch", "c/", "--from-rev", "3", "--ns", cluster.ns_arg],
                         capture_output=True, timeout=30)
    assert cli.returncode == 1 and b"compacted" in cli.stderr and cli.stdout == b""
    assert len(cli.stderr.splitlines()) == 1


def test_the_blocking_client_watches_too(make_cluster):
    cluster = make_cluster()
    with SyncNameServiceClient(cluster.ns_arg) as client:
        with client.watch("s/") as watch:
            watch.started()
            revs = [client.put(f"s/{i}", "v").revision for i in range(3)]
            got = [event.revision for _, event in zip(range(3), watch)]
            assert got == revs


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of the process's stdout; fail the test if none comes within ``timeout``."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            pytest.fail(f"no line from the watch within {timeout} s (so far {line!r})")
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            pytest.fail(f"the watch exited early (so far {line!r})")
        line += chunk
    return line.decode()


def test_cli_kv_watch_prints_one_line_per_event_and_exits_130_on_ctrl_c(make_cluster):
    cluster = make_cluster()
    env = dict(os.environ, FABRIC_NS=cluster.ns_arg)
    run = [FABRIC]
    def put(key: str, value: str) -> str:  # the revision it printed
        done = subprocess.run([*run, "kv", "put", key, value], env=env, check=True,
                              capture_output=True, timeout=30)
        return done.stderr.decode().split()[1]

    # (The nodes register their own names too: revisions are read, not counted.)
    rev_a = put("cfg/a", "1")
    proc = subprocess.Popen([*run, "kv", "watch", "cfg/", "--from-rev", rev_a], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = read_line(proc, 15)
        rev_b = put("cfg/b", "2")
        subprocess.run([*run, "kv", "del", "cfg/a"], env=env, check=True, timeout=30)
        second, third = read_line(proc, 15), read_line(proc, 15)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first.split() == [rev_a, "put", "cfg/a", "1"]
    assert second.split() == [rev_b, "put", "cfg/b", "2"]
    assert third.split()[1:] == ["delete", "cfg/a"] and int(third.split()[0]) > int(rev_b)
    assert proc.returncode == 130 and err.strip() == b"" and out == b""


@pytest.mark.soak
@pytest.mark.parametrize("node_args", [[], ["--snapshot-threshold", "300"]],
                         ids=["log", "snapshots"])
async def test_watchers_stay_exact_through_repeated_kills_and_restarts(make_cluster, node_args):
    """Nodes killed and restarted one after another under continuous writes: every watcher
    sees the same revisions, in order, none repeated, every acknowledged one included (with
    frequent snapshots, restarted nodes catch up by InstallSnapshot and cancel their watches)."""
    cluster = make_cluster(extra_args=node_args)
    rounds = int(os.environ.get("FABRIC_SOAK_ROUNDS", "12"))
    async with NameServiceClient(cluster.ns_arg, timeout=10.0) as client:
        await all_connected(client)
        watchers = [Collector(client.watch("w/")) for _ in range(30)]
        for c in watchers:
            await c.watch.started()
        acked: list[int] = []
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    acked.append((await client.put(f"w/{i % 11}", str(i))).revision)
                except Exception:  # outcome unknown during a failover: it may show up
                    pass
                i += 1

        task = asyncio.ensure_future(writer())
        for r in range(rounds):
            victim = cluster.ids[r % 3]
            await asyncio.sleep(0.7)
            cluster.kill(victim)
            await asyncio.sleep(0.7)
            cluster.start(victim)
        stop.set()
        await task
        await async_wait_for(lambda: all(c.revisions()[-1:] >= acked[-1:] for c in watchers), 20,
                             "every watcher to catch up")
        reference = watchers[0].revisions()
        assert set(acked) <= set(reference)
        assert reference == sorted(set(reference))
        for c in watchers:
            assert c.revisions() == reference and c.error is None
        for c in watchers:
            await c.close()
