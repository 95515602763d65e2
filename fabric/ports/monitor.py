"""Socket-monitor events: a pure parser and the link states it implies.

A monitor socket delivers two frames per event: 6 bytes (event u16, value u32, native byte
order) and the endpoint. :func:`parse_event` turns them into a :class:`MonitorEvent`;
:func:`link_change` says whether the event means the link came up (the ZMTP handshake
completed, so frames can flow) or went down (the kernel closed the connection: the peer process
died or the connection was cut). :func:`watch` is the thin driver that reads a socket's monitor.
"""
from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import zmq
import zmq.asyncio

_EVENT = struct.Struct("=HI")

UP = "up"
DOWN = "down"


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """One socket-monitor event: its kind (a ``zmq.Event``), value and endpoint."""

    event: int
    value: int
    endpoint: str


def parse_event(frames: list[bytes]) -> MonitorEvent | None:
    """Decode the frames of one monitor event; ``None`` if they are not a monitor event."""
    if len(frames) != 2 or len(frames[0]) != _EVENT.size:
        return None
    event, value = _EVENT.unpack(frames[0])
    return MonitorEvent(event, value, frames[1].decode(errors="replace"))


def link_change(event: MonitorEvent) -> str | None:
    """:data:`UP` when a connection is ready, :data:`DOWN` when it was lost, else ``None``."""
    if event.event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return UP
    if event.event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
        return DOWN
    return None


LINK_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
               | zmq.EVENT_MONITOR_STOPPED)


def open_monitor(sock: zmq.Socket) -> zmq.asyncio.Socket:
    """Start monitoring ``sock`` for link changes. Call it BEFORE connecting ``sock``, or the
    first handshake may complete unseen."""
    # The monitor of an asyncio socket is an asyncio socket (the stubs say only zmq.Socket).
    return cast(zmq.asyncio.Socket, sock.get_monitor_socket(LINK_EVENTS))


async def watch(mon: zmq.asyncio.Socket,
                on_change: Callable[[str], Awaitable[None] | None]) -> None:
    """Call ``on_change(UP|DOWN)`` for each link change reported on monitor socket ``mon``.

    Runs until the monitored socket is closed (the monitor then reports MONITOR_STOPPED) or the
    task is cancelled; ``mon`` is always closed on exit.
    """
    try:
        while True:
            try:
                frames = await mon.recv_multipart()
            except zmq.ZMQError:
                return  # the monitor socket was closed under us
            event = parse_event(frames)
            if event is None:
                continue
            if event.event == zmq.EVENT_MONITOR_STOPPED:
                return
            change = link_change(event)
            if change is not None:
                result = on_change(change)
                if result is not None:
                    await result
    finally:
        mon.close(linger=0)
