"""A client's or worker's connection to a queue's leader: one DEALER socket, requests matched
to answers by ``rid``, ``redirect`` followed, a silent leader left for another replica.

The replicas are found in the name service (``queue/<name>``, each with its ``serve``
address) or given as addresses. A request that gets ``redirect`` goes to the address named
(or, when none is known yet, to the next replica after a pause); one that gets no answer in
``attempt_s`` moves the link to the next replica and is sent again there; after ``timeout``
in all it raises ``Unavailable``. Requests are safe to send again: a submit carries its key,
a result its attempt, the rest are reads or idempotent.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from fabric.errors import DecodeError, Unavailable
from fabric.tasks import protocol as p
from nameservice.names import Names

log = logging.getLogger(__name__)

__all__ = ["QueueLink"]

ATTEMPT_S = 2.0
REDIRECT_PAUSE_S = 0.1
HWM = 100_000


class _Moved(Exception):
    """The link moved to another replica: send the request again there."""


class QueueLink:
    """The connection to a queue's leader (see module docstring). ``on_push(items)`` gets the
    messages the queue sends unasked (``run``)."""

    def __init__(self, names: Names | None, queue: str, *, addresses: list[str] | None = None,
                 timeout: float = 30.0, attempt_s: float = ATTEMPT_S,
                 on_push: Callable[[list[Any]], None] | None = None) -> None:
        if names is None and not addresses:
            raise ValueError("a queue link needs the name service or the replicas' addresses")
        self.names = names
        self.queue = queue
        self.addresses = list(addresses or [])
        self.timeout = timeout
        self.attempt_s = attempt_s
        self.on_push = on_push
        self.address = ""
        self.moves = 0
        self.on_moved: Callable[[], None] = lambda: None
        """Called when the link moves to another replica (a worker says hello there)."""
        self._ctx = zmq.asyncio.Context.instance()
        self._sock: zmq.asyncio.Socket | None = None
        self._sync: zmq.Socket[bytes] | None = None  # the same socket, for sends
        self._receiver: asyncio.Task | None = None
        self._rids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._tried: list[str] = []
        self._closed = False

    async def request(self, name: str, *args: Any, timeout: float | None = None,
                      attempt_s: float | None = None) -> list[Any]:
        """Send a request until the leader answers it; the answer's items after ``rid``.
        ``error`` answers raise ``ValueError``; no answer within ``timeout``: Unavailable."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempt_s = self.attempt_s if attempt_s is None else attempt_s
        while True:
            if self._closed:
                raise Unavailable("the queue link is closed")
            if self._sock is None:
                await self._connect(deadline)
            rid = next(self._rids)
            future = asyncio.get_running_loop().create_future()
            self._waiting[rid] = future
            sock, sync = self._sock, self._sync
            assert sock is not None and sync is not None
            try:
                sync.send(p.encode(name, rid, *args), zmq.NOBLOCK)
                self._take_waiting(sync)
                left = deadline - time.monotonic()
                answer = await asyncio.wait_for(future, max(0.0, min(attempt_s, left)))
            except (asyncio.TimeoutError, zmq.Again):
                self._waiting.pop(rid, None)
                if time.monotonic() >= deadline:
                    waited = self.timeout if timeout is None else timeout
                    raise Unavailable(f"queue {self.queue!r}: no leader answered within "
                                      f"{waited:g} s") from None
                if self._sock is sock:
                    self._move("")
                continue
            except _Moved:
                continue
            finally:
                self._waiting.pop(rid, None)
            kind = answer[0]
            if kind == p.REDIRECT:
                hint = answer[2] if len(answer) > 2 and isinstance(answer[2], str) else ""
                if hint == self.address or not hint:
                    await asyncio.sleep(REDIRECT_PAUSE_S)
                if self._sock is sock:
                    self._move(hint if hint != self.address else "")
                continue
            if kind == p.ERROR:
                raise ValueError(str(answer[2]) if len(answer) > 2 else "refused")
            return answer[2:]

    async def close(self) -> None:
        """Close the socket; requests waiting fail with Unavailable."""
        self._closed = True
        self._drop_socket()

    # ------------------------------------------------------------------ the socket

    async def _connect(self, deadline: float) -> None:
        while True:
            address = self._next_candidate()
            if address is None:
                await self._refresh()
                address = self._next_candidate()
            if address is not None:
                self._open(address)
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"no replica of queue {self.queue!r} is registered")
            await asyncio.sleep(REDIRECT_PAUSE_S)

    async def _refresh(self) -> None:
        self._tried = []
        if self.names is None:
            return
        with contextlib.suppress(Exception):  # the name service is away: keep what we had
            found = await self.names.resolve(p.queue_name(self.queue))
            serves = [e.meta.get("serve") for e in found]
            self.addresses = [s for s in serves if isinstance(s, str) and s]

    def _next_candidate(self) -> str | None:
        for address in self.addresses:
            if address not in self._tried:
                self._tried.append(address)
                return address
        return None

    def _open(self, address: str) -> None:
        self._drop_socket()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.connect(address)
        self._sock = sock
        self._sync = zmq.Socket.shadow(sock.underlying)
        self.address = address
        self._receiver = asyncio.ensure_future(self._receive(sock))

    def _move(self, hint: str) -> None:
        """Leave this replica: to ``hint`` if given, else to the next one."""
        self._drop_socket()
        self.moves += 1
        if hint:
            if hint not in self.addresses:
                self.addresses.append(hint)
            self._tried = [a for a in self._tried if a != hint]
            self._tried.append(hint)
            self._open(hint)
        self.on_moved()

    def _drop_socket(self) -> None:
        sock, self._sock, self._sync = self._sock, None, None
        if self._receiver is not None:
            self._receiver.cancel()
            self._receiver = None
        if sock is not None:
            sock.close(0)
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(_Moved() if not self._closed
                                     else Unavailable("the queue link is closed"))
        self.address = ""

    def _take_waiting(self, sync: zmq.Socket) -> None:
        """Take what is queued now: a send on the shadow socket can take the edge that would
        wake the receiver."""
        while int(sync.get(zmq.EVENTS)) & zmq.POLLIN:
            try:
                self._on_frame(sync.recv(zmq.NOBLOCK))
            except zmq.Again:
                return

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            self._on_frame(await sock.recv())
            if self._sync is not None:
                self._take_waiting(self._sync)

    def _on_frame(self, frame: bytes) -> None:
        try:
            items = p.decode(frame)
            if len(items) < 2:
                raise DecodeError("no request id")
        except DecodeError as exc:
            log.warning("dropped a bad frame from the queue: %s", exc)
            return
        if items[0] == p.RUN:
            if self.on_push is not None:
                self.on_push(items)
            return
        future = self._waiting.get(items[1]) if isinstance(items[1], int) else None
        if future is not None and not future.done():
            future.set_result(items)
