"""Links: one DEALER socket per intermediary, with liveness, shared by both kinds of port.

A link is *up* from the moment its ZMTP handshake completes (socket monitor) until either the
connection closes (monitor: the peer process died) or the intermediary stays silent for the
heartbeat timeout (it hung). A lost link is closed and reopened with a fresh socket, so nothing
stale is sent or received on it; the owner is told through ``on_down(link, silence)`` and, once
the new connection completes, ``on_up(link)``. On every (re)connection the link first sends the
owner's HELLO frame. A link the owner lets go of while it is up may be closed with a GOODBYE
frame as its last word (:meth:`LinkSet.drop`, :meth:`LinkSet.close`).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.endpoints import tcp_endpoint
from fabric.errors import ConfigError
from fabric.ports import monitor
from fabric.ports.reader import Reader
from fabric.timing import Timing
from nameservice.security.context import current as security

log = logging.getLogger(__name__)

HWM = 100_000
RECV_BURST = 1000  # frames handled per wake-up before other callbacks get a turn
MAX_LEFTOVERS = HWM  # frames read from a connection that just closed (its receive pipe)
GOODBYE_LINGER_MS = 250  # a socket closed after its GOODBYE keeps sending it this long


class Link:
    """One connection to one intermediary."""

    __slots__ = ("endpoint", "sock", "sync", "reader", "mon", "up", "connected", "load",
                 "last_heard", "last_sent", "gen", "epoch", "tasks", "owed", "draining",
                 "retiring", "drains_asked", "drains_answered")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock: zmq.Socket | None = None
        self.sync: zmq.Socket | None = None  # the same socket (older spelling)
        self.reader: Reader | None = None
        self.mon: zmq.asyncio.Socket | None = None
        self.up = False  # connected and HELLO sent: data may flow
        self.connected = False  # handshake done, HELLO maybe not yet sent
        self.load = 0  # owner-defined: unacked messages (producer)
        self.owed = 0  # owner-defined: credit to return (consumer)
        self.last_heard = 0.0
        self.last_sent = 0.0
        self.gen = 0  # socket generation: events of older sockets are ignored
        self.epoch = 0  # +1 per HELLO: credit granted under an older HELLO is not returned
        self.tasks: list[asyncio.Task] = []
        self.draining = False  # send no new batches on this link
        self.retiring = False  # removed by the owner: close once what is in flight completes
        self.drains_asked = 0  # DRAIN frames sent (consumer leaving this intermediary)
        self.drains_answered = 0  # DRAIN frames received back

    def send(self, frame: bytes) -> bool:
        """Send one frame without waiting; False if the link is down or its pipe is full."""
        if not self.up:
            return False
        return self.send_now(frame)

    def send_now(self, frame: bytes) -> bool:
        """Send even before HELLO went out; False if the frame could not be queued."""
        sock = self.sock
        if sock is None:  # not opened yet
            return False
        try:
            sock.send(frame, zmq.NOBLOCK)  # copying beats zero-copy tracking, even at 256 KiB
        except zmq.ZMQError:
            return False
        # A send can consume the signal of a frame that arrived meanwhile (edge-triggered
        # descriptor): the reader checks and, if one waits, receives it on the next loop turn.
        if self.reader is not None:
            self.reader.check()
        return True

    def __repr__(self) -> str:
        return f"Link({self.endpoint!r}, up={self.up})"


class LinkSet:
    """The links of one port, keyed by endpoint."""

    def __init__(self, ctx: zmq.asyncio.Context | None, routing_id: bytes, timing: Timing,
                 hello: bytes, *, on_frame: Callable[[Link, bytes], None],
                 on_down: Callable[[Link, float], None], on_up: Callable[[Link], None]) -> None:
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._rid = routing_id
        self._timing = timing
        self._hello = hello
        self._hello_again = hello[:3] + bytes((hello[3] | p.HELLO_AGAIN,)) + hello[4:]
        self._on_frame = on_frame
        self._on_down = on_down
        self._on_up = on_up
        self._links: dict[str, Link] = {}
        self._retiring: dict[str, Link] = {}
        self._beat = p.heartbeat_frame()
        self._last_tick = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first _open

    @property
    def endpoints(self) -> list[str]:
        """Endpoints of all links, up or not."""
        return list(self._links)

    def all(self) -> list[Link]:
        """Every link, up or not (retiring ones excluded)."""
        return list(self._links.values())

    def retiring(self) -> list[Link]:
        """Links removed by the owner and still open until their traffic completes."""
        return list(self._retiring.values())

    def up(self) -> list[Link]:
        """Links that are up."""
        return [link for link in self._links.values() if link.up]

    def find(self, endpoint: str) -> Link | None:
        """The link (in use or retiring) to ``endpoint``, if any."""
        endpoint = tcp_endpoint(endpoint)
        return self._links.get(endpoint) or self._retiring.get(endpoint)

    def by_load(self, avoid: Link | None = None) -> list[Link]:
        """Live links that take new batches (not draining), least loaded first; ``avoid`` goes
        last."""
        links = sorted((lk for lk in self._links.values() if lk.up and not lk.draining),
                       key=_load)
        if avoid is not None and avoid in links and len(links) > 1:
            links.remove(avoid)
            links.append(avoid)
        return links

    def add(self, endpoint: str) -> Link:
        """Connect to one more intermediary (no-op if already connected)."""
        endpoint = tcp_endpoint(endpoint)
        link = self._links.get(endpoint)
        if link is None:
            link = self._retiring.pop(endpoint, None)
            if link is not None:  # added back while retiring: keep the connection
                link.retiring = link.draining = False
                link.drains_asked = link.drains_answered = 0
                self._links[endpoint] = link
                self.greet_again(link)  # cancels a DRAIN this port sent on it
                return link
            link = self._links[endpoint] = Link(endpoint)
            self._open(link)
        return link

    def remove(self, endpoint: str) -> Link | None:
        """Disconnect from an intermediary; returns its link (now closed) if it was known."""
        link = self._links.pop(tcp_endpoint(endpoint), None)
        if link is not None:
            self._shut(link)
        return link

    def retire(self, endpoint: str) -> Link | None:
        """Stop using an intermediary but keep the connection open (draining, not reopened
        when lost) until the owner calls :meth:`drop`; returns the link if it was known."""
        link = self._links.pop(tcp_endpoint(endpoint), None)
        if link is not None:
            link.retiring = link.draining = True
            self._retiring[link.endpoint] = link
        return link

    def drop(self, link: Link, goodbye: bytes | None = None) -> None:
        """Close a retiring link; with ``goodbye``, send that frame first if the link is up."""
        if self._retiring.get(link.endpoint) is link:
            del self._retiring[link.endpoint]
        self._shut(link, goodbye)

    def close(self, goodbye: bytes | None = None) -> None:
        """Close every link; with ``goodbye``, send that frame first on each link that is up
        (the intermediaries then forget this port at once instead of declaring it dead)."""
        for link in [*self._links.values(), *self._retiring.values()]:
            self._shut(link, goodbye)
        self._links.clear()
        self._retiring.clear()

    def tick(self, now: float) -> None:
        """Send due heartbeats and declare silent links down.

        If this process itself was frozen (the tick came far too late), the silence is its own
        doing: links get a fresh grace period. (Intermediaries that declared this port dead
        meanwhile answer its next heartbeat with WHO, and :meth:`greet_again` re-introduces it.)
        """
        timing = self._timing
        previous, self._last_tick = self._last_tick, now
        gap = now - previous
        frozen = bool(previous) and timing.frozen(gap)
        if frozen:
            log.warning("this process was frozen for %.0f ms", gap * 1000)
        for link in [*self._links.values(), *self._retiring.values()]:
            if frozen:
                link.last_heard = now
            if link.connected and not link.up:
                self._greet(link, now)
            if not link.up:
                continue
            # Heartbeats go out even right after a freeze: a loop that a slow handler holds
            # for longer than the freeze bar between ticks must still be heard.
            if not frozen and timing.is_silent(link.last_heard, now):
                log.warning("intermediary %s silent for %.0f ms: lost", link.endpoint,
                            (now - link.last_heard) * 1000)
                self._lost(link, now)
            elif now - link.last_sent >= timing.heartbeat and link.send(self._beat):
                link.last_sent = now

    # -- internals ------------------------------------------------------------------------------

    def _open(self, link: Link) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._last_tick:
            self._last_tick = self._loop.time()  # freezes count from here
        # A plain socket (received through a Reader); its monitor is an asyncio socket.
        sock = zmq.Socket(self._ctx, zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self._rid)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * p.MAX_FRAME)
        mon = monitor.open_monitor(sock)
        try:
            sock.connect(security().connect(sock, link.endpoint))
        except (zmq.ZMQError, ConfigError) as exc:
            mon.close(linger=0)
            sock.close(linger=0)
            del self._links[link.endpoint]
            raise ConfigError(f"cannot connect to {link.endpoint!r}: {exc}") from exc
        link.sock = link.sync = sock
        link.mon = mon
        link.gen += 1
        gen = link.gen
        link.reader = Reader(sock, lambda frame: self._on_link_frame(link, frame),
                             burst=RECV_BURST)
        link.tasks = [
            asyncio.ensure_future(monitor.watch(
                mon, lambda change: self._on_change(link, gen, change))),
        ]

    def _shut(self, link: Link, goodbye: bytes | None = None) -> None:
        # A GOODBYE is the link's last frame: the socket lingers so that it still leaves.
        linger = GOODBYE_LINGER_MS if goodbye is not None and link.send(goodbye) else 0
        link.up = link.connected = False
        link.gen += 1
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
        link.tasks = []
        if link.reader is not None:
            link.reader.close()  # before the socket: its descriptor number may be reused
        if link.sock is not None:
            try:
                link.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            link.sock.close(linger=linger)
            link.sock = link.sync = None
        if link.mon is not None:
            # Closed here too: a watch task cancelled before it started never closes it.
            link.mon.close(linger=0)
            link.mon = None

    def _on_change(self, link: Link, gen: int, change: str) -> None:
        if gen != link.gen:
            return
        now = asyncio.get_running_loop().time()
        if change == monitor.UP and not link.connected:
            link.connected = True
            link.last_heard = now
            self._greet(link, now)
        elif change == monitor.DOWN and link.connected:
            log.warning("intermediary %s disconnected: lost", link.endpoint)
            self._lost(link, now)

    def greet_again(self, link: Link) -> None:
        """Answer an intermediary's WHO: send HELLO again on the same connection."""
        if link.up and link.send_now(self._hello_again):
            link.epoch += 1
            link.draining = link.retiring  # the intermediary forgot us, and any drain of its
            self._on_up(link)

    def _greet(self, link: Link, now: float) -> None:
        """Send HELLO; the link is up (usable for data) only once it went out."""
        if not link.send_now(self._hello):
            return  # retried on the next tick
        link.epoch += 1
        link.up = True
        link.last_sent = now
        link.draining = link.retiring  # a new connection: a drain seen on the old one is over
        link.drains_asked = link.drains_answered = 0
        self._on_up(link)

    def _lost(self, link: Link, now: float) -> None:
        silence = now - link.last_heard
        self._read_leftovers(link)
        self._shut(link)
        if self._links.get(link.endpoint) is link:
            self._open(link)
        elif self._retiring.get(link.endpoint) is link:
            del self._retiring[link.endpoint]  # retiring: lost is as good as done
        self._on_down(link, silence)

    def _on_link_frame(self, link: Link, frame: bytes) -> None:
        loop = self._loop
        assert loop is not None  # frames arrive only on links opened on a loop
        link.last_heard = loop.time()
        self._on_frame(link, frame)

    def _read_leftovers(self, link: Link) -> None:
        """Handle the frames that arrived before the connection closed and were not read yet.

        The monitor may report a closed connection before the reader has received what came
        just before it (the acknowledgements a draining intermediary forwarded last): closing
        the socket would throw them away, and their batches would be resent needlessly."""
        sync = link.sync
        if sync is None:
            return
        for _ in range(MAX_LEFTOVERS):
            try:
                frame = sync.recv(zmq.NOBLOCK)
            except zmq.ZMQError:
                return
            self._on_frame(link, frame)


def _load(link: Link) -> int:
    return link.load
