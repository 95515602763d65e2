"""Watches on the client side: ``Watch``, an async iterator of ``WatchEvent``, and ``WatchSet``,
the watches of one client.

Theory of operation
-------------------
A watch is served by one node at a time (any node: followers serve watches too; a client
spreads its watches over the nodes it is connected to, fewest first). The node pushes the
matching events it applies; each push covers the revisions ``from..to`` and starts where the
previous one ended (docs/nameservice.md, "Watches"). The watch keeps ``covered``: every
matching event up to that revision has been queued for the user.

It resumes — asks a node for the events from ``covered + 1`` under a new watch id, so late
pushes of the old one are ignored — when:

* a push starts after ``covered + 1`` (a gap: a push was lost), or does not decode;
* the node cancels the watch (its queue to us overflowed, it installed a snapshot, it has
  known no leader for a while: then on another node);
* the connection to the node drops (the socket monitor sees a killed process at once): on
  another node;
* nothing came from the node for ``STALL_S`` (a node sends a heartbeat to a quiet connection
  every 0.2 s: a frozen node is left after a second): on another node;
* the user's queue (``max_queued`` events) is full: the watch stops taking events and resumes
  once the user has read half of them.

Revisions are global and one per change, so resuming on any node from ``covered + 1`` gives
exactly the missing events: none is missed or repeated. If no node's history reaches back that
far, iterating raises ``Compacted`` (after the events already queued).
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass

from nameservice import wire
from nameservice.errors import (
    Compacted,
    DecodeError,
    NameServiceError,
    RequestRejected,
    Unavailable,
)
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv import KeyValue
from nameservice.kv.codec import kv_from_wire

from .channel import Channel

MAX_QUEUED = 10_000
"""Events a watch holds for its user by default; at the limit it pauses (see module doc)."""
STALL_S = 1.0
"""A watch that got no push for this long resumes on another node."""
CHECK_S = 0.1
"""How often watches are checked for stalls."""
RETRY_MIN_S, RETRY_MAX_S = 0.02, 1.0
"""Backoff between failed attempts to (re)start a watch."""
_MAX_IGNORED = 10_000
_KINDS = ("put", "delete")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``kind`` "put" or "delete"; ``kv`` the key after it (for a delete only the
    key and the revision); ``revision`` the revision of this change."""

    kind: str
    kv: KeyValue
    revision: int


class Watch:
    """The changes of one key, or of every key under a prefix, in revision order.

    ``async for event in watch:`` until ``await watch.close()``. Made by
    ``NameServiceClient.watch``; starting is asynchronous: ``await watch.started()`` returns
    the revision after which events will come.
    """

    def __init__(self, owner: WatchSet, key: bytes, prefix: bool, start_revision: int | None,
                 max_queued: int) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.key = key
        self.prefix = prefix
        self.resumes = 0
        """How many times the watch resumed (after a gap, a cancel, a node failure)."""
        self._owner = owner
        self._covered: int | None = None if start_revision is None else max(0, start_revision - 1)
        self._delivered = 0
        self._max = max_queued
        self._queue: deque[WatchEvent] = deque()
        self._waiter: asyncio.Future | None = None
        self._error: BaseException | None = None
        self._closed = False
        self.wid = 0
        """The id the serving node knows this watch by (0 while none serves it)."""
        self.address: str | None = None
        """The node serving the watch now (or last)."""
        self._avoid: str | None = None
        self._last_push = 0.0
        self._trouble = asyncio.Event()
        self._paused = False
        self._unpause = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ user side

    @property
    def revision(self) -> int:
        """The revision of the last event handed to the user (0 before any)."""
        return self._delivered

    def queued(self) -> int:
        """Events received and not yet read (reading them does not wait)."""
        return len(self._queue)

    async def started(self) -> int:
        """Wait until a node serves the watch; the revision after which its events come."""
        await self._started.wait()
        if self._error is not None and self._covered is None:
            raise self._error
        return self._covered or 0

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        queue = self._queue
        while not queue:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = queue.popleft()
        self._delivered = event.revision
        if self._paused and len(queue) <= self._max // 2:
            self._unpause.set()
        return event

    async def close(self) -> None:
        """Stop watching; iteration ends (events not yet read are dropped)."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._owner.forget(self, cancel=True)
        self._owner.discard(self)
        self._wake()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ the watch's life

    async def _run(self) -> None:
        try:
            await self._subscribe(first=True)
            while True:
                await self._trouble.wait()
                self._trouble.clear()
                self._owner.forget(self, cancel=True)
                if self._paused:
                    await self._unpause.wait()
                    self._paused = False
                self.resumes += 1
                await self._subscribe(first=False)
        except asyncio.CancelledError:
            raise
        except NameServiceError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug must end the iteration loudly, not hang it
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._owner.forget(self, cancel=True)
        self._started.set()
        self._wake()

    async def _subscribe(self, first: bool) -> None:
        """Get a node to serve the watch from ``covered + 1`` (or from now)."""
        owner = self._owner
        channel = owner.channel
        deadline = time.monotonic() + channel.timeout if first else None
        delay = RETRY_MIN_S
        compacted: dict[str, int] = {}  # nodes whose history does not reach back far enough
        failed: dict[str, int] = {}  # nodes that did not serve the watch this round
        last_error: Exception | None = None
        while True:
            address = owner.pick(self._avoid, {**compacted, **failed})
            if address is None and compacted:
                # Every reachable node was asked: none can replay from covered + 1.
                raise Compacted((self._covered or 0) + 1, max(compacted.values()))
            if address is None:
                failed.clear()  # a new round over every node, after the pause below
            else:
                wid = owner.register(self, address)
                from_rev = 0 if self._covered is None else self._covered + 1
                try:
                    payload = await channel.call(
                        wire.OP_WATCH, [wid, self.key, self.prefix, from_rev], address=address,
                        timeout=channel.attempt_timeout)
                    revision, oldest = _watch_reply(payload)
                except (Unavailable, RequestRejected, DecodeError) as exc:
                    last_error = exc
                    owner.forget(self, cancel=True)
                    self._avoid = address
                    failed[address] = 0
                    continue
                else:
                    if oldest:
                        owner.forget(self, cancel=False)
                        compacted[address] = oldest
                        continue
                    if self._covered is None:
                        self._covered = revision
                    self._last_push = time.monotonic()
                    self._avoid = None
                    self._started.set()
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise Unavailable(f"no name-service node would serve the watch ({last_error})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _resume(self, avoid: str | None = None) -> None:
        """Drop the current node's watch (later pushes of it are ignored) and start again."""
        self._owner.forget(self, cancel=True)
        self._avoid = avoid
        self._trouble.set()

    # ------------------------------------------------------------------ pushes

    def _on_events(self, frm: int, to: int, events: list[WatchEvent], now: float) -> None:
        """A push: ``events`` (decoded, checked to lie in ``frm..to``, in order)."""
        self._last_push = now
        covered = self._covered
        if covered is None:
            covered = frm - 1
        if frm > covered + 1:
            self._covered = covered
            self._resume()  # a gap: a push was lost
            return
        queue = self._queue
        queued = len(queue)
        for event in events:
            revision = event.revision
            if revision <= covered:
                continue  # overlap with what we have (a replay from before the gap)
            if len(queue) >= self._max:
                self._covered = revision - 1
                self._paused = True
                self._unpause.clear()
                self._resume()
                break
            queue.append(event)
            covered = revision
        else:
            self._covered = max(covered, to)
        if len(queue) > queued:
            self._wake()

    def _on_cancel(self, reason: object) -> None:
        # Overflow: our queue at the node filled up; restored: the node replaced its state;
        # no leader: the node is cut off. Either way the events from covered + 1 are still
        # wanted: resume (elsewhere if the node is cut off).
        self._resume(self.address if reason == wire.CANCEL_NO_LEADER else None)


def _decode_events(frm: object, to: object, events: object) -> list[WatchEvent]:
    """The events of a push, checked: ints for the range, events in it, in order."""
    if type(frm) is not int or type(to) is not int or type(events) is not list or frm < 1:
        raise DecodeError("a push is [[watch_id...], 0, from_rev, to_rev, [event...]]")
    out = []
    last = frm - 1
    try:
        for kind, kv in events:
            if type(kind) is not int or not 0 <= kind < len(_KINDS):
                raise DecodeError(f"unknown event type {kind!r:.20}")
            kv = kv_from_wire(kv)
            revision = kv.mod_revision
            if not last < revision <= to:
                raise DecodeError("an event out of order or beyond its push's revisions")
            out.append(WatchEvent(_KINDS[kind], kv, revision))
            last = revision
    except (KvDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"bad event in a push: {exc}") from None
    return out


def _watch_reply(payload: object) -> tuple[int, int]:
    if (type(payload) is not list or len(payload) != 2
            or not all(type(x) is int and x >= 0 for x in payload)):
        raise DecodeError("bad WATCH reply from the name service")
    return payload[0], payload[1]


class WatchSet:
    """The watches of one client: routes the nodes' pushes and link changes to them."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        channel.push_handler = self._on_push
        channel.link_listeners.append(self._on_link)
        self._watches: set[Watch] = set()
        self._by_wid: dict[int, Watch] = {}
        self._load: Counter[str] = Counter()
        self._next_wid = 0
        self._ignored: set[tuple[str, int]] = set()
        self._background: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._heard: dict[str, float] = {}  # when each node last sent a push
        self.bad_pushes = 0
        """Pushes dropped because they did not decode (their watches resumed elsewhere)."""

    def watch(self, key: bytes, prefix: bool, start_revision: int | None,
              max_queued: int = MAX_QUEUED) -> Watch:
        """A new watch, started in the background."""
        watch = Watch(self, key, prefix, start_revision, max_queued)
        self._watches.add(watch)
        watch._task = asyncio.ensure_future(watch._run())
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(CHECK_S, self._check)
        return watch

    async def close(self) -> None:
        """Close every watch."""
        for watch in list(self._watches):
            await watch.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._background:  # the nodes' cancels: sent, and answered in a round trip
            await asyncio.wait(list(self._background), timeout=0.5)
        for task in list(self._background):
            task.cancel()

    # ------------------------------------------------------------------ bookkeeping

    def pick(self, avoid: str | None, exclude: dict[str, int]) -> str | None:
        """A connected node for a watch: not ``exclude``, not ``avoid`` if another will do,
        the one serving the fewest of our watches."""
        up = [a for a in self.channel.connected() if a not in exclude]
        if avoid in up and len(up) > 1:
            up.remove(avoid)
        if not up:
            return None
        least = min(self._load[a] for a in up)
        return random.choice([a for a in up if self._load[a] == least])

    def register(self, watch: Watch, address: str) -> int:
        """Give ``watch`` a new id, served by ``address``."""
        self._next_wid += 1
        wid = self._next_wid
        self._by_wid[wid] = watch
        self._load[address] += 1
        watch.wid, watch.address = wid, address
        watch._last_push = time.monotonic()
        return wid

    def forget(self, watch: Watch, cancel: bool) -> None:
        """Stop routing pushes to the watch's current id (and tell its node, if ``cancel``)."""
        wid = watch.wid
        if not wid:
            return
        address = watch.address
        assert address is not None  # an id is always given with the address serving it
        del self._by_wid[wid]
        self._load[address] -= 1
        watch.wid = 0
        if cancel:
            self._cancel_on_node(address, wid)

    def discard(self, watch: Watch) -> None:
        """The watch is closed."""
        self._watches.discard(watch)

    def _cancel_on_node(self, address: str, wid: int) -> None:
        if (address, wid) in self._ignored or address not in self.channel.connected():
            return
        if len(self._ignored) >= _MAX_IGNORED:
            self._ignored.clear()
        self._ignored.add((address, wid))
        if len(self._background) >= _MAX_IGNORED:
            return  # the node drops the watch when it sees us gone, or we ignore its pushes
        task = asyncio.ensure_future(self._send_cancel(address, wid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_cancel(self, address: str, wid: int) -> None:
        try:
            await self.channel.call(wire.OP_WATCH_CANCEL, [wid], address=address, timeout=0.5)
        except NameServiceError:
            # Not through: the node's next push for it (0.2 s at most) asks again.
            self._ignored.discard((address, wid))

    # ------------------------------------------------------------------ input

    def _on_push(self, address: str, items: list) -> None:
        now = time.monotonic()
        self._heard[address] = now
        by_wid = self._by_wid
        for item in items:
            if type(item) is not list or len(item) != 5 or type(item[0]) is not list:
                self.bad_pushes += 1
                continue  # not a push we understand
            if not item[0]:
                continue  # a heartbeat: the node is alive
            kind, events = item[1], []
            if kind == wire.PUSH_EVENTS:
                try:  # decoded once for every watch the push is for
                    events = _decode_events(item[2], item[3], item[4])
                except DecodeError:
                    self.bad_pushes += 1
                    kind = -1  # garbage from this node: its watches go elsewhere
            for wid in item[0]:
                watch = by_wid.get(wid) if type(wid) is int else None
                if watch is None or watch.address != address:
                    if type(wid) is int:
                        self._cancel_on_node(address, wid)  # one we dropped: tell its node
                elif kind == wire.PUSH_EVENTS:
                    watch._on_events(item[2], item[3], events, now)
                elif kind == wire.PUSH_CANCEL:
                    watch._on_cancel(item[2])
                else:
                    watch._resume(avoid=address)

    def _on_link(self, address: str, up: bool) -> None:
        if up:
            return
        for watch in list(self._by_wid.values()):
            if watch.address == address:
                watch._resume(avoid=address)

    def _check(self) -> None:
        if not self._watches:
            self._timer = None  # the next watch starts it again
            return
        now = time.monotonic()
        stalled = now - STALL_S
        heard = self._heard
        for watch in list(self._by_wid.values()):
            address = watch.address
            assert address is not None  # an id is always given with the address serving it
            if (watch._started.is_set() and watch._last_push < stalled
                    and heard.get(address, 0.0) < stalled):
                watch._resume(avoid=address)
        self._timer = asyncio.get_running_loop().call_later(CHECK_S, self._check)
