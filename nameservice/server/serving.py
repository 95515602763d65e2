"""What every server driving a Raft member does alike around its loop (the name-service node,
a stateful component's replica): receive until stopped, then stop its parts in order.

``receive_loop`` waits until the transport has input, then has ``drain(first)`` handle what
is waiting, round after round while ``drain`` says more may be waiting (the loop's other
callbacks run between rounds). ``shut_down`` stops the parts: the pipeline first (what the
fsync worker completes from then on is dropped), the loop's tasks and the clock, then the
worker thread, the snapshot streams and the sockets; the storage is closed only if the
pipeline did not fail (a failed storage is left as it is).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from nameservice.server.clock import TickClock
from nameservice.server.pipeline import ReadyPipeline
from nameservice.server.seam import Transport
from nameservice.server.snapshots import SnapshotStreams
from nameservice.storage import RaftStorage

__all__ = ["receive_loop", "shut_down"]


async def receive_loop(transport: Transport, drain: Callable[[list[bytes] | None], bool]) -> None:
    """Receive forever: each message (or wake-up) handed to ``drain`` with what waits."""
    while True:
        first: list[bytes] | None = await transport.receive()
        while drain(first):
            first = None
            await asyncio.sleep(0)  # more is waiting: let the callbacks run, then go on


async def shut_down(*, pipeline: ReadyPipeline, clock: TickClock, snapshots: SnapshotStreams,
                    transport: Transport, storage: RaftStorage,
                    tasks: Iterable[asyncio.Task]) -> None:
    """Stop a Raft member's parts in order (see module docstring)."""
    pipeline.stop()
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    clock.stop()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
    pipeline.close()
    snapshots.close()
    transport.close()
    if pipeline.failed is None:
        storage.close()
