"""Small helpers for in-process data-path tests (real sockets on 127.0.0.1)."""
from __future__ import annotations

import asyncio
import contextlib

import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.intermediary.core import Intermediary
from tests.waiting import async_wait_for


@contextlib.asynccontextmanager
async def running_intermediary(channel: str, **kwargs):
    """An intermediary on a free port, served by a thread of this process, stopped at exit."""
    node = Intermediary(channel, "tcp://127.0.0.1:0", **kwargs)
    node.bind()
    done = asyncio.get_running_loop().run_in_executor(None, node.serve)
    try:
        yield node
    finally:
        node.stop()
        await asyncio.wait_for(done, 5)


def fake_intermediary() -> tuple[zmq.asyncio.Socket, str]:
    """A ROUTER that ports connect to, and its endpoint: it answers only what a test sends."""
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:0")
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


async def next_ack(fake, rid: bytes) -> p.Ack:
    """The next ACK with entries a port sends to a fake intermediary (kept alive meanwhile)."""
    async def ack():
        _, raw = await fake.recv_multipart()
        await fake.send_multipart([rid, p.heartbeat_frame()])
        msg = p.decode(raw)
        return msg if isinstance(msg, p.Ack) and msg.entries else None
    return await async_wait_for(ack, 10, "an ACK with entries", interval=0)


async def heard_beats(port, beats: int = 3, timeout: float = 5.0) -> None:
    """Wait until ``port`` is connected, then until each intermediary it is connected to has
    sent it ``beats`` more frames (heartbeats, when nothing else flows), each read and handled
    by the port's event loop: the loop went round meanwhile and handled whatever came in."""
    await async_wait_for(lambda: port.connected, timeout, "the port to connect")
    links = port._links.up()
    heard = [[link.last_heard] for link in links]

    def counted() -> bool:
        for link, times in zip(links, heard):
            if link.last_heard != times[-1]:
                times.append(link.last_heard)
        return all(len(times) > beats for times in heard)
    await async_wait_for(counted, timeout, f"{beats} more heartbeats from the intermediaries")


def dealer(rid: bytes, endpoint: str) -> zmq.asyncio.Socket:
    """A DEALER with routing id ``rid`` connected once to ``endpoint``: a test speaks the
    protocol through it as a producer (``b"P" + id``) or a consumer (``b"C" + id``)."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, rid)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, -1)  # one socket, one connection
    sock.connect(endpoint)
    return sock


async def next_frame(sock: zmq.asyncio.Socket, *kinds: int, timeout: float = 10) -> p.Frame:
    """The next frame of one of ``kinds`` on ``sock`` (heartbeats and the rest skipped)."""
    async def one():
        raw = await sock.recv()
        return p.decode(raw) if p.frame_type(raw) in kinds else None
    return await async_wait_for(one, timeout, f"a frame of type {kinds}", interval=0)
