"""Blocking twins of the ports for scripts: each runs the asyncio port on a private loop thread.

    with SyncOutputPort("orders", ["127.0.0.1:5555"]) as port:
        port.send({"id": 1})
    # leaving the block drained the port: everything sent was acknowledged (or the report in
    # port.drain_report says what was not)

These are thin: every call hops onto the loop thread and waits for the asyncio port to finish
it, so their behaviour (batching, backpressure, failover) is exactly the asyncio port's. The hop
costs tens of microseconds per call: use the asyncio ports where speed matters.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

from fabric.drain import DEFAULT_TIMEOUT, DrainReport
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from fabric.ports.received import Handler

T = TypeVar("T")
S = TypeVar("S", bound="_SyncPort[Any]")


class _LoopThread:
    """An event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


PortT = TypeVar("PortT", OutputPort, InputPort)


class _SyncPort(Generic[PortT]):
    """What both blocking ports share: the loop thread, drain, close and ``with``."""

    def __init__(self, thread_name: str, make: Callable[[], Coroutine[Any, Any, PortT]]) -> None:
        self._thread = _LoopThread(thread_name)
        self.port: PortT = self._thread.run(make())
        self.drain_report: DrainReport | None = None

    def drain(self, timeout: float = DEFAULT_TIMEOUT) -> DrainReport:
        """Drain the port (at most ``timeout`` s: see the asyncio port's ``drain``), then
        close; the report says what could not be flushed."""
        report = self._thread.run(self.port.drain(timeout))
        self._thread.stop()
        return report

    def close(self) -> None:
        """Close the port at once (see the asyncio port's ``close``)."""
        self._thread.run(self.port.close())
        self._thread.stop()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Drain (bounded by the port's ``drain_timeout``; the report is kept in
        ``drain_report``) when the block ended normally; close at once when it raised."""
        if self.port.closed:  # drained or closed inside the block already
            return
        if exc_type is None:
            self.drain_report = self.drain(self.port.drain_timeout)
        else:
            self.close()


class SyncOutputPort(_SyncPort[OutputPort]):
    """Blocking :class:`~fabric.ports.output.OutputPort`; same arguments. ``drain`` refuses
    new sends and waits until everything is acknowledged; ``close`` abandons what is not."""

    def __init__(self, channel: str, endpoints: list[str], **options: Any) -> None:
        async def make() -> OutputPort:
            return await OutputPort(channel, endpoints, **options).start()

        super().__init__(f"fabric-out-{channel}", make)

    def send(self, payload: Any) -> None:
        """Send one message; blocks while the window of unacknowledged messages is full."""
        self._thread.run(self.port.send(payload))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message sent so far is acknowledged."""
        self._thread.run(self.port.flush(timeout))


class SyncInputPort(_SyncPort[InputPort]):
    """Blocking-world :class:`~fabric.ports.input.InputPort`; same arguments. ``drain`` takes
    no new batches and handles and acknowledges what was received; ``close`` sends pending
    acknowledgements and leaves the rest to be redelivered.

    The handler runs on the port's loop thread: it must be thread-safe with respect to the
    caller's own threads, and must not block longer than the heartbeat timeout.
    """

    def __init__(self, channel: str, endpoints: list[str], handler: Handler,
                 **options: Any) -> None:
        async def make() -> InputPort:
            return await InputPort(channel, endpoints, handler, **options).start()

        super().__init__(f"fabric-in-{channel}", make)
