"""Handshakes a CURVE server refuses before its ZAP handler is asked, and connections beyond a
listening socket's limit: both seen through the monitors of the server sockets.

Two kinds of stranger never reach the ZAP handler (zap.py), so its counters cannot see them:

* a peer without keys greets with another mechanism (NULL): libzmq drops it during the greeting
  (ZMTP "mechanism mismatch");
* a CURVE peer that expects another server key: its HELLO does not decrypt, and libzmq drops
  it (ZMTP "cryptographic" error) — a client given the wrong certificate for this address, or
  a forged handshake.

Both show only as ``HANDSHAKE_FAILED_PROTOCOL`` events on the server socket's monitor.
:class:`HandshakeWatch` monitors every socket the process secures, in a thread of its own, and
counts them (``handshake_refused_mechanism``, ``handshake_refused_crypto``), with every other
failed handshake (malformed, cut short, timed out) as ``handshake_failed_other``. Which side
of a mechanism mismatch notices it first is a race: a keyless peer that does hangs up before
its greeting reaches the server, which then sees a handshake cut short — a keyless peer is
counted in one of ``handshake_refused_mechanism`` and ``handshake_failed_other``. A refusal by
the ZAP handler (``HANDSHAKE_FAILED_AUTH``) is the handler's to count. Each kind is logged the
first time on each endpoint, then every 1,000th time: a monitor event names the endpoint the
server listens on, not the peer, so a flood of strangers costs no log volume.

**Connections per listening socket** (keys or not): each watched socket admits at most
``max_connections`` open connections (``FABRIC_MAX_CONNECTIONS``; default half the process's
descriptor limit, at most 10,000). A connection accepted beyond is shut down at once (the peer
sees it close, and reconnects later), counted in ``connections_refused`` and logged the first
time on each endpoint, then every 1,000th time: a flood of idle connections cannot use up the
process's descriptors or memory, and a socket's own budget keeps another one (the control
socket) reachable.
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import resource
import socket
import struct
import threading
from collections.abc import Callable

import zmq

log = logging.getLogger(__name__)

__all__ = ["COUNTERS", "EVENTS", "HANDSHAKE_FAILED", "HandshakeWatch", "handshake_failure",
           "max_connections", "parse_event", "refusal", "shut_down"]

REFUSED_MECHANISM = "handshake_refused_mechanism"
REFUSED_CRYPTO = "handshake_refused_crypto"
FAILED_OTHER = "handshake_failed_other"
CONNECTIONS_REFUSED = "connections_refused"
COUNTERS = (REFUSED_MECHANISM, REFUSED_CRYPTO, FAILED_OTHER, CONNECTIONS_REFUSED)
EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
          | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED)
"""What a watched socket reports: its failed handshakes, its connections' starts and ends, and
the end of its monitor."""
ENV = "FABRIC_MAX_CONNECTIONS"
MAX_DEFAULT = 10_000
_WHY = {REFUSED_MECHANISM: "the peer has no keys (it speaks another mechanism than CURVE)",
        REFUSED_CRYPTO: "the peer's CURVE handshake does not decrypt (it expects another "
                        "server key here)",
        FAILED_OTHER: "a handshake failed (malformed, cut short or timed out)",
        CONNECTIONS_REFUSED: "a connection beyond the socket's limit (FABRIC_MAX_CONNECTIONS) "
                             "was shut down"}
_EVENT = struct.Struct("=HI")
_ids = itertools.count(1)


def max_connections() -> int:
    """Open connections one listening socket admits: ``FABRIC_MAX_CONNECTIONS``, else half
    the process's descriptor limit, at most ``MAX_DEFAULT`` (and at least 16)."""
    given = os.environ.get(ENV, "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_DEFAULT
    return max(16, min(MAX_DEFAULT, soft // 2))


def shut_down(fd: int) -> bool:
    """End the connection on ``fd`` (libzmq, which owns the descriptor, then closes it);
    False if it is no connection any more."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False


HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
"""A client socket's monitor events that say its handshake failed."""


def handshake_failure(event: int, value: int, keyed: bool = True, who: str = "node") -> str:
    """Why a handshake failed (a monitor event and its value), for the caller's error; empty
    when the failure says nothing for sure: a keyless client's handshake cut short is a secured
    node that saw the mechanism mismatch first and hung up before the client read its
    greeting (which side sees it first is a race; the next attempt tells)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"the {who} refused this process's key"
    if (event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
        return (f"the {who} uses another security mechanism (one side has keys, the other "
                f"not: --keys / FABRIC_KEYS)")
    if not keyed and event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return ""
    return f"the handshake failed (is the {who}'s key the one trusted for its address?)"


def parse_event(frames: list[bytes]) -> tuple[int, int, str] | None:
    """``(event, value, endpoint)`` of a monitor message; None if it is not one."""
    if len(frames) != 2 or len(frames[0]) != _EVENT.size:
        return None
    event, value = _EVENT.unpack(frames[0])
    return event, value, frames[1].decode(errors="replace")


def refusal(event: int, value: int) -> str | None:
    """The counter a server socket's monitor event adds to (None: not a failed handshake, or
    one the ZAP handler counts)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return REFUSED_MECHANISM
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return REFUSED_CRYPTO
        return FAILED_OTHER
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return FAILED_OTHER
    return None


class HandshakeWatch:
    """Counts the failed handshakes of the server sockets of ``ctx`` it watches (``watch``);
    ``on_disconnected(fd)`` is told, in the watch's thread, of every connection that ended."""

    def __init__(self, ctx: zmq.Context,
                 on_disconnected: Callable[[int], None] | None = None,
                 limit: int | None = None) -> None:
        self._ctx = ctx
        self._on_disconnected = on_disconnected
        self.limit = limit if limit is not None else max_connections()
        """Open connections each watched socket admits."""
        self._open: dict[zmq.Socket, set[int]] = {}  # a monitor -> its socket's connections
        self._ended = threading.Event()
        self._new: queue.SimpleQueue[zmq.Socket] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: set[tuple[str, str]] = set()
        self.counters = dict.fromkeys(COUNTERS, 0)
        # The thread sleeps in poll until a monitor or this says something: an idle process
        # (or a test process holding many contexts) pays nothing for its watches.
        self._wake_address = f"inproc://fabric.handshakes.wake.{next(_ids)}"

    def watch(self, sock: zmq.Socket) -> None:
        """Count the failed handshakes of server socket ``sock`` from now on (call it from the
        thread that owns ``sock``; until ``sock`` is closed)."""
        address = f"inproc://fabric.handshakes.{next(_ids)}"
        sock.monitor(address, EVENTS)
        events = self._ctx.socket(zmq.PAIR)
        events.linger = 0
        events.connect(address)
        self._new.put(events)  # handed to the watch's thread (the queue is the memory barrier)
        self._wake()

    def _wake(self) -> None:
        """Make the watch's thread look at its queue and stop flag now."""
        try:
            kick = self._ctx.socket(zmq.PUSH)
        except zmq.ZMQError:  # the context ended: so did the thread
            return
        kick.linger = 100
        kick.connect(self._wake_address)
        try:
            kick.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        kick.close()

    def start(self) -> HandshakeWatch:
        """Read the monitors in a background thread."""
        self._thread = threading.Thread(target=self._serve, name="handshakes", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        poller = zmq.Poller()
        watched: set[zmq.Socket] = set()
        wake = self._ctx.socket(zmq.PULL)
        wake.linger = 0
        try:
            wake.bind(self._wake_address)
            poller.register(wake, zmq.POLLIN)
            while not self._stop.is_set():
                while not self._new.empty():
                    events = self._new.get()
                    watched.add(events)
                    poller.register(events, zmq.POLLIN)
                for events, _ in poller.poll():
                    if events is wake:
                        while wake.poll(0):
                            wake.recv()
                        continue
                    if self._read(events):
                        continue
                    poller.unregister(events)
                    watched.discard(events)
                    events.close(0)
        except zmq.ContextTerminated:
            pass
        finally:
            self._ended.set()
            wake.close(0)
            while not self._new.empty():
                watched.add(self._new.get())
            for events in watched:
                events.close(0)

    @property
    def serving(self) -> bool:
        """Whether the watch still reads its monitors (not after its context ended)."""
        return self._thread is not None and not self._ended.is_set()

    def _read(self, events: zmq.Socket) -> bool:
        """Count what one monitor reported; False once its socket is closed."""
        try:
            frames = events.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return True
        parsed = parse_event(frames)
        if parsed is None:
            return True
        event, value, endpoint = parsed
        if event == zmq.EVENT_MONITOR_STOPPED:
            self._open.pop(events, None)
            return False
        open_fds = self._open.setdefault(events, set())
        if event == zmq.EVENT_ACCEPTED:
            if len(open_fds) >= self.limit:
                shut_down(value)
                self.counters[CONNECTIONS_REFUSED] += 1
                self._log(CONNECTIONS_REFUSED, endpoint)
            else:
                open_fds.add(value)
            return True
        if event == zmq.EVENT_DISCONNECTED:
            open_fds.discard(value)
            if self._on_disconnected is not None:
                self._on_disconnected(value)
            return True
        counter = refusal(event, value)
        if counter is not None:
            self.counters[counter] += 1
            self._log(counter, endpoint)
        return True

    def _log(self, counter: str, endpoint: str) -> None:
        first = (endpoint, counter) not in self._logged
        if not first and self.counters[counter] % 1000:
            return
        self._logged.add((endpoint, counter))
        level = logging.INFO if counter == FAILED_OTHER else logging.WARNING
        if counter == CONNECTIONS_REFUSED:
            log.warning("refused a connection on %s (%d so far): %s (%d open)", endpoint,
                        self.counters[counter], _WHY[counter], self.limit)
            return
        log.log(level, "refused a connection on %s (%d so far): %s", endpoint,
                self.counters[counter], _WHY[counter])

    def close(self) -> None:
        """Stop counting (the watched sockets keep serving)."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
