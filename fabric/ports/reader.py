"""Reader: hands every frame a ZeroMQ socket receives to a callback, straight from the event loop.

``zmq.asyncio`` wakes a task through a future for each receive: the loop runs pyzmq's handler,
which resolves the future, and the task resumes one loop turn later. On the data path that costs
tens of microseconds per hop. A :class:`Reader` registers the socket's descriptor with the loop
itself and, when it is readable, receives with ``NOBLOCK`` until ``EAGAIN``, calling
``on_frame`` for each frame on the spot.

The descriptor of a ZeroMQ socket is *edge-triggered*: it signals that the socket's state
changed, not that a frame waits. Three rules keep a frame from being stranded unseen:

1. Each wake-up receives until ``EAGAIN``: only then does the descriptor signal the next frame.
2. A wake-up that stops early (``burst`` frames, so other callbacks get their turn) schedules
   another one at once instead of waiting for a signal that will not come.
3. Any other operation on the socket (a send; reading ``EVENTS``) may consume the signal of a
   frame that arrived meanwhile: call :meth:`Reader.check` after it, which reads ``EVENTS``
   and schedules a wake-up if a frame waits.

``on_frame`` may close the reader (or the socket, after closing the reader): receiving stops at
once. Frames are handled in arrival order, one at a time; memory is bounded by the socket's
receive high-water mark, since nothing is taken off the socket ahead of ``on_frame``.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq

DEFAULT_BURST = 1000


class Reader:
    """Call ``on_frame(frame)`` for every single-part frame received on ``sock``.

    ``sock`` is a plain (blocking-API) ``zmq.Socket`` used only from the loop's thread. Create
    the reader inside the running loop; :meth:`close` it before closing the socket.
    """

    __slots__ = ("_sock", "_fd", "_on_frame", "_burst", "_loop", "_pending", "_closed")

    def __init__(self, sock: zmq.Socket, on_frame: Callable[[bytes], None], *,
                 burst: int = DEFAULT_BURST) -> None:
        if burst < 1:
            raise ValueError("burst must be positive")
        self._sock = sock
        self._on_frame = on_frame
        self._burst = burst
        self._loop = asyncio.get_running_loop()
        fd = sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)  # ZMQ_FD is an int option
        self._fd = fd
        self._closed = False
        self._pending = False
        self._loop.add_reader(self._fd, self._ready)
        # Frames may have arrived before the reader existed, their signal already spent.
        self._schedule()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def check(self) -> None:
        """Re-arm after another operation on the socket (see rule 3 of the module docstring)."""
        if self._closed or self._pending:
            return
        try:
            events: int = self._sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]  # an int option
        except zmq.ZMQError:
            return  # closed under us: nothing to receive
        if events & zmq.POLLIN:
            self._schedule()

    def close(self) -> None:
        """Stop receiving. The socket stays open (its owner closes it)."""
        if self._closed:
            return
        self._closed = True
        # Before the socket closes: its descriptor number may be reused by the next socket.
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)

    def _schedule(self) -> None:
        if not self._pending:
            self._pending = True
            self._loop.call_soon(self._ready)

    def _ready(self) -> None:
        self._pending = False
        sock = self._sock
        on_frame = self._on_frame
        for _ in range(self._burst):
            if self._closed:
                return
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return  # drained: the descriptor signals the next frame
            except zmq.ZMQError:
                self.close()  # the socket was closed or terminated: nothing more will come
                return
            on_frame(frame)
        if not self._closed:
            self._schedule()  # more may wait, and no signal will say so
