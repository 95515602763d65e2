"""The node's transport seam: what a node needs of its transport, and the output queue every
transport builds its frames with.

A node receives ``[identity, frame]`` messages (peers and clients alike) and sends three kinds
of output, queued during a step and sent by ``flush`` — Raft messages (one PEER frame per peer),
replies (one REPLY frame per client, cut like pushes) and watch pushes (EVENT frames, cut to fit
``wire.MAX_CLIENT_FRAME``). ``Transport`` is that contract; ``NodeTransport`` (``transport.py``,
ZeroMQ sockets) and ``MemoryTransport`` (``memtransport.py``, one process, one loop) implement
it. Both queue into an ``Outbox`` and encode with ``nameservice.wire``, so they carry the very
same bytes.

No sockets here, and no event loop.
"""
from __future__ import annotations

from typing import Callable, Protocol

from nameservice import wire

__all__ = ["Outbox", "PUSHES_PER_FRAME", "PushFailed", "Reply", "Transport",
           "TransportFactory", "push_frames"]

PUSHES_PER_FRAME = 4096
"""Watch pushes per EVENT frame at most (fewer when the frame would be too big)."""

Reply = Callable[[bytes, int, int, object], None]
"""``reply(identity, rid, status, payload)``: queue one reply to a client."""
PushFailed = Callable[[bytes, list, bool], None]
"""``on_push_failed(identity, items, gone)``: pushes that could not be sent (``gone``: the client
is not connected; else its queue is full)."""

PEER_MARK = b"\xffpeer:"
"""Before the identity of a frame that came in on a node's peer port (a port of its own, apart
from the client port): the intake takes peer frames only from there, and no request."""


class Transport(Protocol):
    """What a node needs of its transport. Sending is queue, then ``flush`` once per step."""

    peer_drops: int
    """Frames for peers dropped (peer down, or its queue full)."""
    reply_drops: int
    """Replies dropped (client gone, or its queue full)."""
    on_push_failed: PushFailed | None
    """Told of watch pushes that could not be sent (set by the watch hub)."""

    async def receive(self) -> list[bytes] | None:
        """Wait for the next message (``[identity, frame]``), or until input is waiting
        (None: ``drain`` takes it)."""
        ...

    def set_peers(self, peers: dict[int, str]) -> None:
        """Send Raft messages to exactly these peers (id -> member address, ``HOST:PORT`` or
        ``HOST:PORT/PEERPORT``) from now on."""
        ...

    def drain(self, limit: int) -> list[list[bytes]]:
        """Up to ``limit`` messages waiting now, without blocking."""
        ...

    def has_input(self) -> bool:
        """Whether a message is waiting now (the node drains at once if so)."""
        ...

    def queue_messages(self, messages: list) -> None:
        """Queue Raft messages (each has ``.to``)."""
        ...

    def send_peer(self, peer: int, data: bytes) -> None:
        """Send one frame to node ``peer`` now, outside the queued output (a snapshot stream's
        frames); dropped, and counted in ``peer_drops``, if the peer is down or its queue
        full."""
        ...

    def queue_reply(self, identity: bytes, rid: int, status: int, payload: object) -> None:
        """Queue a reply ``[rid, status, payload]`` to a client."""
        ...

    def queue_push(self, identity: bytes, item: list) -> None:
        """Queue a watch push for a client."""
        ...

    def flush(self) -> bool:
        """Send everything queued; whether input is waiting after sending to clients."""
        ...

    def close(self) -> None:
        """Stop sending and receiving; unsent output is dropped."""
        ...


class TransportFactory(Protocol):
    """Makes the transport of node ``node_id`` of ``cluster`` (id → ``HOST:PORT``); called by
    ``Node.run``, which closes it when it stops."""

    def __call__(self, node_id: int, cluster: dict[int, str]) -> Transport:
        ...


class Outbox:
    """What a node queued during a step: Raft messages per peer, replies and watch pushes per
    client. A transport takes each kind when it flushes."""

    __slots__ = ("messages", "replies", "pushes")

    def __init__(self) -> None:
        self.messages: dict[int, list] = {}
        self.replies: dict[bytes, list] = {}
        self.pushes: dict[bytes, list] = {}

    def queue_messages(self, messages: list) -> None:
        """Queue Raft messages, by the peer they are for."""
        out = self.messages
        for msg in messages:
            queue = out.get(msg.to)
            if queue is None:
                out[msg.to] = [msg]
            else:
                queue.append(msg)

    def queue_reply(self, identity: bytes, rid: int, status: int, payload: object) -> None:
        """Queue a reply to a client."""
        out = self.replies.get(identity)
        if out is None:
            self.replies[identity] = [[rid, status, payload]]
        else:
            out.append([rid, status, payload])

    def queue_push(self, identity: bytes, item: list) -> None:
        """Queue a watch push for a client."""
        out = self.pushes.get(identity)
        if out is None:
            self.pushes[identity] = [item]
        else:
            out.append(item)

    def peer_frames(self) -> list[tuple[int, bytes]]:
        """Take the queued Raft messages as one PEER frame per peer."""
        out, self.messages = self.messages, {}
        return [(peer, wire.encode_peer_frame(msgs)) for peer, msgs in out.items()]

    def reply_frames(self) -> list[tuple[bytes, bytes]]:
        """Take the queued replies as REPLY frames: one per client, more when its replies
        would pass ``wire.MAX_BATCH`` items or ``wire.MAX_CLIENT_FRAME`` bytes."""
        out, self.replies = self.replies, {}
        frames: list[tuple[bytes, bytes]] = []
        for identity, replies in out.items():
            for start in range(0, len(replies), wire.MAX_BATCH):
                for _, data in _cut(wire.REPLY, replies[start:start + wire.MAX_BATCH], []):
                    frames.append((identity, data))
        return frames

    def take_pushes(self) -> dict[bytes, list]:
        """Take the queued pushes, by client (``push_frames`` makes their frames)."""
        out, self.pushes = self.pushes, {}
        return out


def push_frames(items: list) -> list[tuple[list, bytes]]:
    """A client's pushes as ``(items, EVENT frame)`` pairs: at most ``PUSHES_PER_FRAME`` items
    each, halved while a frame exceeds ``wire.MAX_CLIENT_FRAME`` (a single push may, up to the
    client's limit)."""
    frames: list[tuple[list, bytes]] = []
    for start in range(0, len(items), PUSHES_PER_FRAME):
        _cut(wire.EVENT, items[start:start + PUSHES_PER_FRAME], frames)
    return frames


def _cut(kind: int, items: list, out: list) -> list[tuple[list, bytes]]:
    """``items`` as frames of ``kind``, halved while a frame exceeds ``wire.MAX_CLIENT_FRAME``
    (a single item may); appended to ``out`` as ``(items, frame)`` pairs."""
    data = wire.frame(kind, items)
    if len(data) > wire.MAX_CLIENT_FRAME and len(items) > 1:
        half = len(items) // 2
        _cut(kind, items[:half], out)
        _cut(kind, items[half:], out)
    else:
        out.append((items, data))
    return out
