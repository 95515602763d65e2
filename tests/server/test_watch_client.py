"""The client's watch logic (gaps, cancels, failover, stalls, pauses) over an in-memory channel
that plays the nodes: each WATCH is recorded, and the test pushes what a node would."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from nameservice import wire
from nameservice.client import watch as watch_module
from nameservice.client.watch import WatchSet
from nameservice.errors import Compacted, Unavailable
from tests.waiting import async_wait_for

NODES = ["n1:1", "n2:2", "n3:3"]


class MemoryChannel:
    """Answers WATCH from ``replies`` (address → [revision, oldest] or an exception);
    records every call."""

    timeout = 0.3
    attempt_timeout = 0.2

    def __init__(self) -> None:
        self.push_handler = None
        self.link_listeners = []
        self.up = list(NODES)
        self.replies: dict[str, object] = {}
        self.watches: list[tuple[str, int, int]] = []  # (address, watch id, from_rev)
        self.cancels: list[tuple[str, int]] = []

    def connected(self) -> list[str]:
        return list(self.up)

    async def call(self, op, args, *, address=None, timeout=None):
        await asyncio.sleep(0)
        if op == wire.OP_WATCH_CANCEL:
            self.cancels.append((address, args[0]))
            return True
        self.watches.append((address, args[0], args[3]))
        reply = self.replies.get(address, [10, 0])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def push(self, address: str, wid: int, frm: int, to: int, revisions=(), key=b"k/1"):
        events = [[0, [key, b"v", r, r, 1, 0]] for r in revisions]
        self.push_handler(address, [[[wid], wire.PUSH_EVENTS, frm, to, events]])

    def link_down(self, address: str) -> None:
        self.up.remove(address)
        for listener in self.link_listeners:
            listener(address, False)


async def next_revisions(watch, count: int) -> list[int]:
    return [(await asyncio.wait_for(watch.__anext__(), 3)).revision for _ in range(count)]


def resumed_from(channel: MemoryChannel, watch) -> list[int]:
    """The revision the watch asked its current node for, once it asked (``[]`` before)."""
    return [from_rev for _, wid, from_rev in channel.watches if wid == watch.wid]


async def watch_on_a_silent_node(watches: WatchSet, address: str):
    """A watch started after the others, on a node other than ``address``, that the test keeps
    silent. The stall check that leaves it judges the older watches too, and would leave with
    it any of them that it finds as silent."""
    unheard = watches.watch(b"unheard/", True, 1)
    await unheard.started()
    assert unheard.address != address
    return unheard


@contextlib.asynccontextmanager
async def repeated(action, every: float):
    """Call ``action()`` now and then every ``every`` seconds while the block runs: a node
    that keeps talking."""
    async def talk() -> None:
        while True:
            action()
            await asyncio.sleep(every)
    task = asyncio.ensure_future(talk())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def setup():
    channel = MemoryChannel()
    watches = WatchSet(channel)
    yield channel, watches
    await watches.close()


async def test_from_now_starts_after_the_nodes_revision_and_delivers_pushed_events(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, None)
    assert await watch.started() == 10
    address, wid, from_rev = channel.watches[0]
    assert from_rev == 0
    channel.push(address, wid, 11, 13, [11, 13])
    assert await next_revisions(watch, 2) == [11, 13]
    assert watch.revision == 13


async def test_a_gap_resumes_from_the_last_covered_revision_without_repeats(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, 5)
    await watch.started()
    address, wid, from_rev = channel.watches[0]
    assert from_rev == 5
    channel.push(address, wid, 5, 7, [6])
    channel.push(address, wid, 9, 9, [9])  # 8 is missing: a push was lost
    await async_wait_for(lambda: len(channel.watches) == 2, 3, "the resume")
    address2, wid2, from_rev2 = channel.watches[1]
    assert from_rev2 == 8 and wid2 != wid
    channel.push(address, wid, 10, 10, [10])  # the old watch id: ignored
    channel.push(address2, wid2, 8, 10, [8, 9, 10])
    assert await next_revisions(watch, 4) == [6, 8, 9, 10]
    assert (address, wid) in channel.cancels  # the old node was told to drop it
    assert watch.resumes == 1


async def test_a_dead_node_is_left_for_another_one_and_nothing_is_lost(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1)
    await watch.started()
    address, wid, _ = channel.watches[0]
    channel.push(address, wid, 1, 3, [2, 3])
    channel.link_down(address)
    await async_wait_for(lambda: len(channel.watches) == 2, 3, "the resume")
    address2, wid2, from_rev = channel.watches[1]
    assert address2 != address and from_rev == 4
    channel.push(address2, wid2, 4, 5, [5])
    assert await next_revisions(watch, 3) == [2, 3, 5]


async def test_a_silent_node_is_left_after_the_stall_time(setup, monkeypatch):
    monkeypatch.setattr(watch_module, "STALL_S", 0.1)
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1)
    await watch.started()
    address = channel.watches[0][0]
    await async_wait_for(lambda: len(channel.watches) == 2, 3, "the resume after the stall")
    assert channel.watches[1][0] != address and channel.watches[1][2] == 1


async def test_progress_pushes_keep_a_watch_on_its_node_and_advance_its_revision(
        setup, monkeypatch):
    monkeypatch.setattr(watch_module, "STALL_S", 0.15)
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1)
    await watch.started()
    address, wid, _ = channel.watches[0]
    unheard = await watch_on_a_silent_node(watches, address)
    covered = [0]

    def progress() -> None:
        covered.append(covered[-1] + 1)
        channel.push(address, wid, covered[-1], covered[-1])  # empty: progress only

    async with repeated(progress, 0.05):
        await async_wait_for(lambda: unheard.resumes, 3, "the watch on the silent node to stall")
    assert watch.resumes == 0 and (watch.address, watch.wid) == (address, wid)
    await unheard.close()
    channel.link_down(address)
    assert await async_wait_for(lambda: resumed_from(channel, watch), 3, "the resume") == [
        covered[-1] + 1]  # resumes after what progress covered


async def test_heartbeats_of_a_node_keep_its_quiet_watches_there(setup, monkeypatch):
    monkeypatch.setattr(watch_module, "STALL_S", 0.15)
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1)
    await watch.started()
    address, wid, _ = channel.watches[0]
    unheard = await watch_on_a_silent_node(watches, address)
    async with repeated(lambda: channel.push_handler(address, [[[], wire.PUSH_EVENTS, 0, 0, []]]),
                        0.05):
        await async_wait_for(lambda: unheard.resumes, 3, "the watch on the silent node to stall")
    assert watch.resumes == 0 and watch.wid == wid and watches.bad_pushes == 0
    await unheard.close()
    await async_wait_for(lambda: watch.resumes, 3, "the resume once the heartbeats stop")


async def test_a_cancel_from_the_node_resumes(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1)
    await watch.started()
    address, wid, _ = channel.watches[0]
    channel.push(address, wid, 1, 4, [4])
    channel.push_handler(address, [[[wid], wire.PUSH_CANCEL, wire.CANCEL_OVERFLOW, "full", 0]])
    await async_wait_for(lambda: len(channel.watches) == 2, 3, "the resume")
    assert channel.watches[1][2] == 5


async def test_a_push_that_does_not_decode_sends_the_watch_to_another_node(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1)
    await watch.started()
    address, wid, _ = channel.watches[0]
    channel.push_handler(address, [[[wid], wire.PUSH_EVENTS, 1, 2, [[0, "not a kv"]]]])
    channel.push_handler(address,
                         [[[wid], wire.PUSH_EVENTS, 1, 2, [[0, [b"k", b"v", 9, 9, 1, 0]]]]])
    channel.push_handler(address, ["junk", [1], [[wid], 7]])  # ignored without harm
    await async_wait_for(lambda: len(channel.watches) == 2, 3, "the resume")
    assert channel.watches[1][0] != address and channel.watches[1][2] == 1
    assert watches.bad_pushes == 5  # two that do not decode, three that are not pushes


async def test_a_full_queue_pauses_the_watch_and_resumes_after_the_user_reads(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, 1, max_queued=4)
    await watch.started()
    address, wid, _ = channel.watches[0]
    other = watches.watch(b"other/", True, 1)
    await other.started()
    other_address, other_wid, _ = channel.watches[1]
    channel.push(address, wid, 1, 10, range(1, 11))  # 10 events, room for 4
    # Then the other watch's node cancels it: it resumes at once, by the steps a resume of the
    # full watch would take, and after it.
    channel.push_handler(other_address,
                         [[[other_wid], wire.PUSH_CANCEL, wire.CANCEL_OVERFLOW, "full", 0]])
    await async_wait_for(lambda: (address, wid) in channel.cancels, 3, "the pause")
    await async_wait_for(lambda: resumed_from(channel, other), 3, "the other watch's resume")
    assert len(channel.watches) == 3 and watch.resumes == 0  # paused: no resume until read
    await other.close()
    assert await next_revisions(watch, 2) == [1, 2]
    assert await async_wait_for(lambda: resumed_from(channel, watch), 3,
                                "the resume after reading") == [5]
    channel.push(watch.address, watch.wid, 5, 10, range(5, 11)[:2])
    assert await next_revisions(watch, 4) == [3, 4, 5, 6]


async def test_compacted_on_every_node_raises_after_the_queued_events(setup):
    channel, watches = setup
    channel.replies = {a: [50, 40] for a in NODES}
    watch = watches.watch(b"k/", True, 3)
    with pytest.raises(Compacted) as info:
        await watch.__anext__()
    assert (info.value.revision, info.value.oldest) == (3, 40)
    assert sorted(a for a, _, _ in channel.watches) == NODES


async def test_a_node_with_a_longer_history_serves_a_resume_the_others_cannot(setup):
    channel, watches = setup
    channel.replies = {NODES[0]: [50, 40], NODES[1]: [50, 40], NODES[2]: [50, 0]}
    watch = watches.watch(b"k/", True, 3)
    await watch.started()
    assert channel.watches[-1][0] == NODES[2]


async def test_the_first_start_fails_with_unavailable_when_no_node_serves(setup):
    channel, watches = setup
    channel.up = []
    watch = watches.watch(b"k/", True, None)
    with pytest.raises(Unavailable):
        await watch.__anext__()


async def test_watches_are_spread_over_the_nodes(setup):
    channel, watches = setup
    started = [watches.watch(b"k/", True, None) for _ in range(9)]
    for watch in started:
        await watch.started()
    per_node = {a: sum(1 for w in started if w.address == a) for a in NODES}
    assert per_node == {a: 3 for a in NODES}


async def test_close_ends_the_iteration_and_cancels_on_the_node(setup):
    channel, watches = setup
    watch = watches.watch(b"k/", True, None)
    await watch.started()
    address, wid, _ = channel.watches[0]
    reader = asyncio.ensure_future(watch.__anext__())
    await async_wait_for(lambda: watch._waiter is not None, 3, "the reader to wait for events")
    await watch.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reader, 3)
    await async_wait_for(lambda: (address, wid) in channel.cancels, 3, "the cancel")
