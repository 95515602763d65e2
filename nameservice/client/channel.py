"""The client's connection to a cluster: one DEALER per node, pipelined calls, retries.

Theory of operation
-------------------
A ``Channel`` holds a DEALER (ZMQ_IMMEDIATE) per known node address and a socket monitor on
each. Every call gets a request id and goes to the current *target* (the leader, as far as the
channel knows). Calls made in the same event-loop turn are sent together in one frame per node.

A call is retried — with the same request bytes, so a write keeps its session seq and is never
applied twice — when:

* the node answers NOT_LEADER with an address: at once, to that address (the new target);
* the node answers NOT_LEADER without an address, UNAVAILABLE or BUSY: after ``RETRY_DELAY_S``,
  to the next node (to the same node for BUSY);
* the target's connection drops (the monitor reports it; a killed process is seen at once):
  at once, every call sent to it, to the next connected node;
* no answer came within ``attempt_timeout`` (a silent or partitioned node): to the next node.

A call fails with ``Unavailable`` once its total ``timeout`` has passed. Bounded memory: at most
``max_in_flight`` calls are pending; more wait for a free slot.

Watch pushes (EVENT frames) are not calls: they go to ``push_handler``, and link changes to
``link_listeners`` (the client's watches use both, see ``client/watch.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from typing import Any, Callable, cast

import zmq
import zmq.asyncio

from nameservice import wire
from nameservice.address import connect_endpoint, parse_address
from nameservice.errors import (
    ConfigError,
    DecodeError,
    Forbidden,
    RequestRejected,
    Unavailable,
)
from nameservice.security.context import current as security
from nameservice.security.handshakes import HANDSHAKE_FAILED, handshake_failure

log = logging.getLogger(__name__)

RETRY_DELAY_S = 0.005
TIMER_S = 0.005
SCAN_EVERY = 10  # timer ticks between scans of every pending call for timeouts
_EVENT = struct.Struct("=HI")
_MONITOR_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
                   | HANDSHAKE_FAILED)


class _Call:
    __slots__ = ("item", "future", "deadline", "attempt_deadline", "address", "retry_at", "pinned",
                 "attempt_s", "refusal")

    def __init__(self, item: list, future: asyncio.Future, deadline: float, pinned: str | None,
                 attempt_s: float):
        self.item = item
        self.attempt_s = attempt_s  # how long one node may stay silent before the next is tried
        self.future = future
        self.deadline = deadline
        self.attempt_deadline = 0.0
        self.address: str | None = None  # where the last attempt went (None: not sent yet)
        self.retry_at = 0.0
        self.pinned = pinned  # a call for one node only (status): no redirects
        self.refusal = ""  # the reason of the last BUSY or UNAVAILABLE answer, told on timeout


class _Link:
    __slots__ = ("address", "sock", "raw", "monitor", "up", "tasks", "refused")

    def __init__(self, address: str, sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket):
        self.address = address
        self.sock = sock
        self.raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        self.refused = ""  # why its last handshake failed (a key problem: not transient)
        self.monitor = monitor
        self.up = False
        self.tasks: list[asyncio.Task] = []


class Channel:
    """Pipelined request/reply with the cluster; see the module docstring."""

    def __init__(self, addresses: list[str], *, timeout: float = 5.0,
                 attempt_timeout: float = 1.0, max_in_flight: int = 4096,
                 ctx: zmq.asyncio.Context | None = None) -> None:
        if not addresses:
            raise ValueError("a channel needs at least one node address")
        for address in addresses:
            parse_address(address)
        self._addresses = list(addresses)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._links: dict[str, _Link] = {}
        self._pending: dict[int, _Call] = {}
        self._outbox: dict[str, list] = {}
        self._flush_scheduled = False
        self._unsent: dict[int, _Call] = {}
        self._ticks = 0
        self._rid = 0
        self._target = addresses[0]
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._slot_waiters: deque[asyncio.Future] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._settled = asyncio.Event()  # a link is up, or every node refused us (refused())
        self._closed = False
        self._loop: asyncio.AbstractEventLoop  # set by open()
        self.redirects = 0
        self.retries = 0
        self.push_handler: Callable[[str, list], None] | None = None
        """Called with ``(address, items)`` for every EVENT frame a node sends."""
        self.link_listeners: list[Callable[[str, bool], None]] = []
        """Called with ``(address, up)`` when a node's connection comes up or goes down."""

    # ------------------------------------------------------------------ lifecycle

    async def open(self, wait: float | None = None) -> None:
        """Connect to every node; wait until one link is up, every node refused this
        client's handshake (the calls then fail at once, saying why), or ``wait`` seconds
        passed."""
        self._loop = asyncio.get_running_loop()
        for address in self._addresses:
            self._link(address)
        self._timer = self._loop.call_later(TIMER_S, self._on_timer)
        try:
            await asyncio.wait_for(self._settled.wait(), self.timeout if wait is None else wait)
        except asyncio.TimeoutError:
            pass  # calls will wait for a link, up to their own timeout

    async def close(self) -> None:
        """Fail pending calls, close every socket."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for call in list(self._pending.values()):
            if not call.future.done():
                call.future.set_exception(Unavailable("client closed"))
        self._pending.clear()
        for link in self._links.values():
            for task in link.tasks:
                task.cancel()
            for task in link.tasks:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            link.sock.disable_monitor()
            link.monitor.close(0)
            link.sock.close(0)
        self._links.clear()

    def _link(self, address: str) -> _Link:
        link = self._links.get(address)
        if link is not None:
            return link
        sock = self._ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.RECONNECT_IVL, 20),
                           (zmq.RECONNECT_IVL_MAX, 500), (zmq.SNDHWM, 100_000),
                           (zmq.RCVHWM, 100_000), (zmq.MAXMSGSIZE, wire.MAX_PEER_FRAME)):
            sock.setsockopt(opt, value)
        monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        sock.connect(connect_endpoint(security().connect(sock, address)))
        link = _Link(address, sock, monitor)
        self._links[address] = link
        link.tasks.append(asyncio.ensure_future(self._receive(link)))
        link.tasks.append(asyncio.ensure_future(self._watch(link)))
        return link

    # ------------------------------------------------------------------ calls

    async def call(self, op: int, args: list, *, address: str | None = None,
                   timeout: float | None = None, attempt_timeout: float | None = None) -> Any:
        """Send ``[rid, op, *args]`` and return the payload of the OK reply.

        ``address`` pins the call to one node (no redirect, no retry elsewhere).
        ``timeout`` and ``attempt_timeout`` override the channel's for this call. Raises
        ``Unavailable`` after the timeout and ``RequestRejected`` when the node refuses it.
        """
        if self._closed:
            raise Unavailable("client closed")
        if self._in_flight >= self._max_in_flight:
            await self._wait_for_slot()
        self._in_flight += 1
        self._rid += 1
        rid = self._rid
        future = self._loop.create_future()
        now = time.monotonic()
        call = _Call([rid, op, *args], future,
                     now + (self.timeout if timeout is None else timeout), address,
                     self.attempt_timeout if attempt_timeout is None else attempt_timeout)
        if address is not None:
            self._link(address)
        self._pending[rid] = call
        self._send(call, now)
        try:
            return await future
        finally:
            self._pending.pop(rid, None)  # close() may have cleared it
            if self._unsent:
                self._unsent.pop(rid, None)
            self._in_flight -= 1
            if self._slot_waiters:
                self._release_slot()

    async def _wait_for_slot(self) -> None:
        """Wait until fewer than ``max_in_flight`` calls are pending (first come, first served)."""
        while self._in_flight >= self._max_in_flight:
            waiter = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()

    def _release_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _send(self, call: _Call, now: float) -> None:
        address = call.pinned or self._pick()
        if address is None:
            self._later(call, now)
            return
        call.address = address
        call.attempt_deadline = now + call.attempt_s
        out = self._outbox.get(address)
        if out is None:
            self._outbox[address] = [call.item]
        else:
            out.append(call.item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _pick(self) -> str | None:
        link = self._links.get(self._target)
        if link is not None and link.up:
            return self._target
        for address, link in self._links.items():
            if link.up:
                self._target = address
                return address
        return None

    def _rotate(self, away_from: str | None) -> None:
        """Make the next connected node after ``away_from`` the target."""
        addresses = list(self._links)
        start = addresses.index(away_from) + 1 if away_from in self._links else 0
        for i in range(len(addresses)):
            candidate = addresses[(start + i) % len(addresses)]
            if candidate != away_from and self._links[candidate].up:
                self._target = candidate
                return

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for address, items in outbox.items():
            self._send_frames(address, items)

    def _send_frames(self, address: str, items: list) -> None:
        data = wire.frame(wire.REQUEST, items) if len(items) <= wire.MAX_BATCH else b""
        if (not data or len(data) > wire.MAX_CLIENT_FRAME) and len(items) > 1:
            half = len(items) // 2
            self._send_frames(address, items[:half])
            self._send_frames(address, items[half:])
            return
        link = self._links.get(address)
        if link is not None:
            try:
                link.raw.send(data, zmq.NOBLOCK)
                self._kick(link)
                return
            except zmq.ZMQError:
                link.up = False
                with contextlib.suppress(zmq.ZMQError):  # closed: nothing to receive
                    self._kick(link)  # a failed send may consume a reply's edge all the same
        # No link, not connected (ZMQ_IMMEDIATE) or queue full: resend elsewhere.
        self._resend_from(address)

    def _resend_from(self, address: str) -> None:
        """Resend at once every call whose last attempt went to ``address``."""
        if self._target == address:
            self._rotate(address)
        now = time.monotonic()
        for call in list(self._pending.values()):
            if call.address == address and not call.future.done():
                if call.pinned:
                    self._later(call, now)
                else:
                    self.retries += 1
                    self._send(call, now)

    # ------------------------------------------------------------------ replies

    async def _receive(self, link: _Link) -> None:
        """Drain ``link`` whenever its descriptor signals. The loop watches the descriptor
        itself (a ``zmq.asyncio`` poll costs a poller, futures and callbacks per wake-up);
        it is edge-triggered, and a drain until ``EAGAIN`` re-arms it."""
        readable = asyncio.Event()
        fd = cast(int, link.raw.get(zmq.FD))
        self._loop.add_reader(fd, readable.set)
        try:
            while True:
                readable.clear()
                self._drain(link)
                await readable.wait()
        finally:  # cancelled by close(), before the socket closes and its number is reused
            if not self._loop.is_closed():
                self._loop.remove_reader(fd)

    def _drain(self, link: _Link) -> None:
        """Handle every reply waiting on ``link``, without blocking."""
        raw = link.raw
        try:
            while True:
                self._on_frame(link.address, raw.recv(zmq.NOBLOCK))
        except zmq.Again:
            pass
        except zmq.ZMQError:
            pass  # the socket was closed under us

    def _kick(self, link: _Link) -> None:
        """After a send: drain now if a reply is already waiting.

        ZeroMQ's file descriptor is edge-triggered, and a send on the socket may consume the
        edge a newly arrived reply raised: the poll in ``_receive`` would then miss it.
        """
        if cast(int, link.raw.get(zmq.EVENTS)) & zmq.POLLIN:
            self._loop.call_soon(self._drain, link)

    def _on_frame(self, address: str, data: bytes) -> None:
        try:
            kind, body = wire.split_frame(data, wire.MAX_PEER_FRAME)
            if kind != wire.REPLY:
                if kind == wire.EVENT and self.push_handler is not None:
                    self.push_handler(address, body)
                    return
                raise DecodeError(f"a client does not accept frames of kind {kind}")
        except DecodeError:
            return  # not from a node we understand: ignore it
        pending = self._pending
        now = 0.0
        for w in body:
            if type(w) is not list or len(w) != 3:
                continue  # not a reply: ignore it
            rid, status, payload = w
            call = pending.get(rid) if type(rid) is int else None
            if call is None or call.future.done():
                continue  # a late answer to an attempt we already retried
            if status == wire.ST_OK:
                call.future.set_result(payload)
                continue
            if type(status) is not int:
                continue
            now = now or time.monotonic()
            self._on_refusal(call, address, status, payload, now)

    def _on_refusal(self, call: _Call, address: str, status: int, payload, now: float) -> None:
        if status == wire.ST_FORBIDDEN:
            call.future.set_exception(Forbidden(str(payload), status))
            return
        if status == wire.ST_BAD_REQUEST or call.pinned and status != wire.ST_BUSY:
            call.future.set_exception(RequestRejected(str(payload), status))
            return
        self.retries += 1
        if status in (wire.ST_BUSY, wire.ST_UNAVAILABLE) and isinstance(payload, str):
            call.refusal = payload
        if status == wire.ST_NOT_LEADER and isinstance(payload, str) and payload != address:
            try:
                link = self._link(payload)
            except ValueError:
                link = None  # a hint we cannot use: treat it as "no leader known"
            if link is not None and link.up:
                self.redirects += 1
                self._target = payload
                self._send(call, now)
                return
            if link is not None:
                # A new address (its handshake is under way), or a leader that went down and
                # that this node has not given up on yet: retry in a moment, do not bounce.
                self._target = payload
        if status != wire.ST_BUSY and self._target == address:
            self._rotate(address)
        self._later(call, now)

    # ------------------------------------------------------------------ failures and time

    async def _watch(self, link: _Link) -> None:
        monitor = link.monitor
        while True:
            frames = await monitor.recv_multipart()
            if len(frames) != 2 or len(frames[0]) != _EVENT.size:
                continue
            event, value = _EVENT.unpack(frames[0])
            if event & HANDSHAKE_FAILED:
                keyed = link.raw.getsockopt(zmq.MECHANISM) == zmq.CURVE
                link.refused = handshake_failure(event, value, keyed) or link.refused
                if self.refused():
                    self._settled.set()
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.refused = ""
                link.up = True
                self._settled.set()
                self._retry_unsent(time.monotonic())
                self._tell_listeners(link.address, True)
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                if link.up:
                    link.up = False
                    self._resend_from(link.address)
                self._tell_listeners(link.address, False)

    def _tell_listeners(self, address: str, up: bool) -> None:
        for listener in self.link_listeners:
            listener(address, up)

    def _later(self, call: _Call, now: float) -> None:
        """Retry ``call`` after ``RETRY_DELAY_S`` (or as soon as a link comes up)."""
        call.address = None
        call.retry_at = now + RETRY_DELAY_S
        self._unsent[call.item[0]] = call

    def _retry_unsent(self, now: float) -> None:
        unsent, self._unsent = self._unsent, {}
        for call in unsent.values():
            if not call.future.done():
                self._send(call, now)

    def _on_timer(self) -> None:
        if self._closed:
            return
        now = time.monotonic()
        if self._unsent:
            due = [c for c in self._unsent.values() if now >= c.retry_at or c.future.done()]
            for call in due:
                del self._unsent[call.item[0]]
                if not call.future.done():
                    self._send(call, now)
        self._ticks += 1
        if self._ticks % SCAN_EVERY == 0:
            self._scan_timeouts(now)
        self._timer = self._loop.call_later(TIMER_S, self._on_timer)

    def refused(self) -> str:
        """Why no node will talk to this client, when every one refused its handshake (a
        key or mechanism mismatch, which retrying does not mend); empty otherwise."""
        links = list(self._links.values())
        if not links or not all(link.refused for link in links):
            return ""
        reasons: dict[str, list[str]] = {}
        for link in links:
            reasons.setdefault(link.refused, []).append(link.address)
        return "; ".join(f"{why} ({', '.join(where)})" for why, where in reasons.items())

    def _scan_timeouts(self, now: float) -> None:
        refused = self.refused()
        for call in list(self._pending.values()):
            if call.future.done():
                continue
            if refused and (call.pinned is None or self._links[call.pinned].refused):
                call.future.set_exception(Unavailable(f"refused: {refused}"))
            elif now >= call.deadline:
                last = f"; the last answer: {call.refusal}" if call.refusal else ""
                call.future.set_exception(Unavailable(
                    f"no answer from the name service in time "
                    f"(nodes: {', '.join(call.pinned and [call.pinned] or self._links)}){last}"))
            elif call.address is not None and now >= call.attempt_deadline:
                self.retries += 1
                if not call.pinned and self._target == call.address:
                    self._rotate(call.address)
                self._send(call, now)

    def learn(self, addresses: list[str]) -> list[str]:
        """Connect to these node addresses too (members that joined); the new ones."""
        new = [a for a in addresses if a not in self._links]
        for address in new:
            try:
                self._link(address)
            except ConfigError as exc:  # a member whose key this process does not know
                log.warning("not connecting to the member at %s: %s", address, exc)
            except ValueError:
                continue  # not an address this channel can use
        return new

    @property
    def target(self) -> str:
        """The node calls go to now (the leader, as far as this channel knows)."""
        return self._target

    def connected(self) -> list[str]:
        """The node addresses whose connection is up now."""
        return [address for address, link in self._links.items() if link.up]

    @property
    def addresses(self) -> list[str]:
        """Every node address this channel knows (given, or learnt from redirects)."""
        return list(self._links) or list(self._addresses)
