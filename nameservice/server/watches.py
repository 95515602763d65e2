"""The watch hub of one node: which clients watch which keys, and the pushes they are owed.

Theory of operation
-------------------
Every node serves watches, followers too, from the events its own state machine applies.
A watch is ``(client identity, watch id)`` with a key or a prefix and ``sent_through``: the
revision up to which the client has been sent every matching event. Each push covers the
revisions ``sent_through + 1 .. to``; the next one starts where it ended. So a client sees any
lost push (dropped by a full queue, a node change) as a gap and resumes from its last revision.

* **Create** (``WATCH``): from now (``from_revision`` 0), or replaying ``events_since(from)``
  first. If the history no longer reaches back, the reply says so (``oldest`` > 0) and no
  watch is made: the client tries another node, or resyncs. A node that has not yet applied
  ``from - 1`` (it lags) starts the watch there and pushes the events as it catches up.
* **Events**: ``on_events`` files every applied event under the watches it matches (exact keys
  by dictionary, prefixes by one ``startswith`` per distinct prefix); ``flush`` turns them into
  pushes once per loop step, queued on the transport, which sends one EVENT frame per client.
  Watches of one client that are owed the same events from the same revision share one push
  (its first field lists their ids): a process with a thousand watchers of one prefix costs
  one encoded event per step, not a thousand.
* **Progress**: a client connection that got no push for ``PROGRESS_S`` gets a heartbeat (a
  push for no watch): the node is alive; a client that hears nothing from a node for a few
  intervals resumes its watches elsewhere. Every ``ADVANCE_S`` each watch behind the node's
  revision gets an empty push up to it, so an idle watch's revision keeps up with the history
  and a resume does not fall off its end. (Per connection, not per watch, because a node may
  serve many thousands of mostly idle watches.)
* **Cut off**: a node that has known no leader for ``leaderless_s`` (it is cut off from a
  majority, or there is none) cancels its watches with NO_LEADER and refuses new ones
  (UNAVAILABLE): its state no longer moves, so its watchers are better served by a node that
  still follows a leader — they resume there, or wait for one, from their own revision.
* **Failure**: a push that cannot be sent because the client's queue is full (it does not read)
  cancels the watches it was for with OVERFLOW; the cancel is resent until it goes through. A
  client that disconnected loses all its watches. A snapshot installed over the state machine
  cancels every watch with RESTORED (the events in between were never applied here).

Bounds: ``MAX_WATCHES_PER_CLIENT`` per client connection (its quota: beyond, WATCH is refused
with BAD_REQUEST "too many watches for this client", counted in ``watch_quota_refused``) and
``MAX_WATCHES`` per node, shared; once those are taken, a connection holding fewer than
``WATCHES_RESERVED_FLOOR`` watches here may still use ``RESERVED_WATCHES`` more, so one client
that filled the node does not lock every other one out (beyond: "too many watches on this
node", counted in ``watch_refused``; the client tries another node). A push holds at most
``MAX_EVENTS_PER_PUSH`` events and about ``MAX_PUSH_BYTES`` (a long replay is cut into
several).
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

from nameservice import wire
from nameservice.errors import DecodeError
from nameservice.kv import Compacted, Event, KvStateMachine
from nameservice.kv.codec import kv_to_wire

MAX_WATCHES = 100_000
"""Watches one node serves at most."""
MAX_WATCHES_PER_CLIENT = 10_000
"""Watches one client connection may hold on a node (its quota)."""
RESERVED_WATCHES = 10_000
"""Watches beyond ``MAX_WATCHES`` kept for connections holding fewer than the floor."""
WATCHES_RESERVED_FLOOR = 16
"""A connection holding fewer watches than this on a node may use the reserved ones."""
MAX_EVENTS_PER_PUSH = 1000
"""Events per push; a longer replay is sent as several pushes."""
MAX_PUSH_BYTES = 4 << 20
"""Approximate key and value bytes per push (one event may exceed it alone)."""
PROGRESS_S = 0.2
"""A client connection that got no push for this long gets a heartbeat."""
ADVANCE_S = 1.0
"""How often watches behind the node's revision get an empty push up to it."""


class _Watch:
    __slots__ = ("identity", "wid", "key", "prefix", "sent_through", "pending")

    def __init__(self, identity: bytes, wid: int, key: bytes, prefix: bool,
                 sent_through: int) -> None:
        self.identity = identity
        self.wid = wid
        self.key = key
        self.prefix = prefix
        self.sent_through = sent_through
        self.pending: list | None = None  # wire events owed, filed since the last flush


class PushTransport(Protocol):
    """What the hub needs of the node's transport (a ``NodeTransport``)."""

    on_push_failed: Callable[[bytes, list, bool], None] | None

    def queue_push(self, identity: bytes, item: list) -> None: ...


class WatchHub:
    """The watches of one node over ``machine``; pushes go out through ``transport``."""

    def __init__(self, machine: KvStateMachine, leaderless_s: float = 1.2) -> None:
        self.machine = machine
        self.leaderless_s = leaderless_s
        self._leaderless_since: float | None = None
        self._cut_off = False
        self.transport: PushTransport | None = None
        self._watches: dict[tuple[bytes, int], _Watch] = {}
        self._by_client: dict[bytes, dict[int, _Watch]] = {}
        # key or prefix -> the watches on it (dicts: removing one is O(1), order is kept)
        self._by_key: dict[bytes, dict[tuple[bytes, int], _Watch]] = {}
        self._by_prefix: dict[bytes, dict[tuple[bytes, int], _Watch]] = {}
        self._dirty: list[_Watch] = []
        self._cancels: dict[bytes, dict[int, list]] = {}  # cancels not yet sent, per client
        self._next_progress = 0.0
        self._next_advance = 0.0
        self._last_push: dict[bytes, float] = {}  # per client connection
        self.counters = {"watches_created": 0, "watches_cancelled": 0, "watch_events": 0,
                         "watch_overflows": 0, "watch_clients_gone": 0, "watch_refused": 0,
                         "watch_quota_refused": 0}

    def attach(self, transport: PushTransport) -> None:
        """Send pushes through ``transport`` (a ``NodeTransport``) from now on."""
        self.transport = transport
        transport.on_push_failed = self._push_failed

    def _queue(self) -> Callable[[bytes, list], None]:
        transport = self.transport
        assert transport is not None, "attach() a transport first"
        return transport.queue_push

    def __len__(self) -> int:
        return len(self._watches)

    # ------------------------------------------------------------------ requests

    def handle(self, identity: bytes, w: list) -> tuple[int, object]:
        """Serve a WATCH or WATCH_CANCEL request; return ``(status, payload)`` for the reply."""
        try:
            if w[1] == wire.OP_WATCH_CANCEL:
                return wire.ST_OK, self._cancel(identity, wire.watch_cancel_args(w))
            wid, key, prefix, from_rev = wire.watch_args(w)
        except DecodeError as exc:
            return wire.ST_BAD_REQUEST, str(exc)
        return self._create(identity, wid, key, prefix, from_rev)

    def _create(self, identity: bytes, wid: int, key: bytes, prefix: bool,
                from_rev: int) -> tuple[int, object]:
        machine = self.machine
        revision = machine.revision
        client = self._by_client.get(identity)
        if self._cut_off:
            return wire.ST_UNAVAILABLE, "this node has known no leader for a while"
        if (identity, wid) in self._watches:
            return wire.ST_BAD_REQUEST, f"watch {wid} exists already"
        held = 0 if client is None else len(client)
        if held >= MAX_WATCHES_PER_CLIENT:
            self.counters["watch_quota_refused"] += 1
            return wire.ST_BAD_REQUEST, (f"too many watches for this client "
                                         f"({MAX_WATCHES_PER_CLIENT} on this node)")
        total = len(self._watches)
        if total >= MAX_WATCHES and (held >= WATCHES_RESERVED_FLOOR
                                     or total >= MAX_WATCHES + RESERVED_WATCHES):
            self.counters["watch_refused"] += 1
            return wire.ST_BAD_REQUEST, "too many watches on this node"
        backlog: list[Event] = []
        if from_rev:
            try:
                backlog = machine.events_since(from_rev, key)
            except Compacted as exc:
                return wire.ST_OK, [revision, exc.oldest]
            if not prefix:
                backlog = [e for e in backlog if e.kv.key == key]
        start = from_rev - 1 if from_rev else revision
        watch = _Watch(identity, wid, key, prefix, start)
        self._watches[identity, wid] = watch
        if client is None:
            client = self._by_client[identity] = {}
        client[wid] = watch
        index = self._by_prefix if prefix else self._by_key
        group = index.get(key)
        if group is None:
            group = index[key] = {}
        group[identity, wid] = watch
        self.counters["watches_created"] += 1
        if backlog:
            watch.pending = [_event_to_wire(e) for e in backlog]
            self._dirty.append(watch)
        return wire.ST_OK, [revision, 0]

    def _cancel(self, identity: bytes, wid: int) -> bool:
        watch = self._watches.get((identity, wid))
        if watch is None:
            return False
        self._remove(watch)
        return True

    def _remove(self, watch: _Watch) -> None:
        del self._watches[watch.identity, watch.wid]
        client = self._by_client[watch.identity]
        del client[watch.wid]
        if not client:
            del self._by_client[watch.identity]
            self._last_push.pop(watch.identity, None)
        index = self._by_prefix if watch.prefix else self._by_key
        group = index[watch.key]
        del group[watch.identity, watch.wid]
        if not group:
            del index[watch.key]
        watch.pending = None
        self.counters["watches_cancelled"] += 1

    # ------------------------------------------------------------------ events

    def on_events(self, events) -> None:
        """File applied events (in revision order) under the watches they match."""
        if not self._watches or not events:
            return
        by_key, by_prefix, dirty = self._by_key, self._by_prefix, self._dirty
        for event in events:
            key = event.kv.key
            wire_event = None
            matched = by_key.get(key)
            groups = [matched] if matched else []
            for prefix, group in by_prefix.items():
                if key.startswith(prefix):
                    groups.append(group)
            if not groups:
                continue
            revision = event.kv.mod_revision
            wire_event = _event_to_wire(event)
            for group in groups:
                for watch in group.values():
                    if revision <= watch.sent_through:
                        continue  # a lagging node replays what this watch has already had
                    if watch.pending is None:
                        watch.pending = [wire_event]
                        dirty.append(watch)
                    else:
                        watch.pending.append(wire_event)

    def flush(self) -> None:
        """Queue the pushes of the events filed since the last flush."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        # Watches of one client owed the same events from the same revision share a push.
        groups: dict[tuple, tuple[list, list[_Watch]]] = {}
        for watch in dirty:
            events = watch.pending
            if events is None:
                continue  # cancelled meanwhile
            watch.pending = None
            key = (watch.identity, watch.sent_through, tuple(map(id, events)))
            group = groups.get(key)
            if group is None:
                groups[key] = (events, [watch])
            else:
                group[1].append(watch)
        revision = self.machine.revision
        queue = self._queue()
        now = time.monotonic()
        for (identity, sent_through, _), (events, watches) in groups.items():
            self.counters["watch_events"] += len(events) * len(watches)
            wids = [watch.wid for watch in watches]
            start = sent_through + 1
            chunks = _chunks(events)
            for n, chunk in enumerate(chunks, 1):
                to = revision if n == len(chunks) else chunk[-1][1][3]
                to = max(to, sent_through)
                queue(identity, [wids, wire.PUSH_EVENTS, start, to, chunk])
                start = to + 1
            for watch in watches:
                watch.sent_through = start - 1
            self._last_push[identity] = now

    def tick(self, now: float, has_leader: bool = True) -> None:
        """Send heartbeats and progress (see module doc) and retry unsent cancels, at most
        every ``PROGRESS_S / 2``; cancel every watch once the node has been leaderless too
        long."""
        if has_leader:
            self._leaderless_since, self._cut_off = None, False
        elif self._leaderless_since is None:
            self._leaderless_since = now
        elif not self._cut_off and now - self._leaderless_since >= self.leaderless_s:
            self._cut_off = True
            for watch in list(self._watches.values()):
                self._cancel_with(watch, wire.CANCEL_NO_LEADER,
                                  "this node has known no leader for a while; resume elsewhere", 0)
        if now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_S / 2
        queue = self._queue()
        if self._cancels:
            cancels, self._cancels = self._cancels, {}
            for identity, items in cancels.items():
                for item in items.values():
                    queue(identity, item)
        if not self._watches:
            return
        if now >= self._next_advance:
            self._next_advance = now + ADVANCE_S
            self._advance(now)
        idle = now - PROGRESS_S
        last_push = self._last_push
        for identity in self._by_client:
            if last_push.get(identity, 0.0) <= idle:
                queue(identity, [[], wire.PUSH_EVENTS, 0, 0, []])
                last_push[identity] = now

    def _advance(self, now: float) -> None:
        """An empty push up to the node's revision for every watch behind it."""
        revision = self.machine.revision
        groups: dict[tuple[bytes, int], list[_Watch]] = {}
        for watch in self._watches.values():
            if watch.sent_through < revision and watch.pending is None:
                key = (watch.identity, watch.sent_through)
                group = groups.get(key)
                if group is None:
                    groups[key] = [watch]
                else:
                    group.append(watch)
        queue = self._queue()
        for (identity, sent_through), watches in groups.items():
            queue(identity, [[w.wid for w in watches], wire.PUSH_EVENTS, sent_through + 1,
                             revision, []])
            for watch in watches:
                watch.sent_through = revision
            self._last_push[identity] = now

    def on_restore(self) -> None:
        """A snapshot replaced the state: the events it covers were never applied here, so
        every watch is cancelled (RESTORED) and resumes from its own revision, here or
        elsewhere."""
        for watch in list(self._watches.values()):
            self._cancel_with(watch, wire.CANCEL_RESTORED,
                              "the node installed a snapshot; resume", 0)

    def _cancel_with(self, watch: _Watch, reason: int, message: str, oldest: int) -> None:
        self._remove(watch)
        self._queue()(watch.identity, [[watch.wid], wire.PUSH_CANCEL, reason, message, oldest])

    # ------------------------------------------------------------------ send failures

    def _push_failed(self, identity: bytes, items: list, gone: bool) -> None:
        if gone:
            client = self._by_client.get(identity)
            if client is not None:
                self.counters["watch_clients_gone"] += 1
                for watch in list(client.values()):
                    self._remove(watch)
            self._cancels.pop(identity, None)
            return
        # The client's queue is full: the watches these pushes were for have a gap now.
        self.counters["watch_overflows"] += 1
        unsent = self._cancels.setdefault(identity, {})
        for item in items:
            for wid in item[0]:
                found = self._watches.get((identity, wid))
                if found is not None:
                    self._remove(found)
                if item[1] == wire.PUSH_CANCEL or found is not None:
                    unsent[wid] = [[wid], wire.PUSH_CANCEL, wire.CANCEL_OVERFLOW,
                                   "the client did not read its events in time; resume", 0]
        if not unsent:
            del self._cancels[identity]


def _chunks(events: list) -> list[list]:
    """``events`` cut into pushes of at most ``MAX_EVENTS_PER_PUSH`` events and about
    ``MAX_PUSH_BYTES`` of keys and values."""
    if len(events) == 1:
        return [events]  # the usual case
    out: list[list] = []
    chunk: list = []
    size = 0
    for event in events:
        kv = event[1]
        grows = len(kv[0]) + len(kv[1])
        if chunk and (len(chunk) >= MAX_EVENTS_PER_PUSH or size + grows > MAX_PUSH_BYTES):
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(event)
        size += grows
    out.append(chunk)
    return out


def _event_to_wire(event: Event) -> list:
    return [int(event.type), kv_to_wire(event.kv)]
