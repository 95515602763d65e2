"""The node's ZeroMQ sockets: the ROUTER clients send to, the ROUTER peers send to (the same
one unless the node has a peer port of its own), one DEALER per peer.

Every node binds a ROUTER on its client ``HOST:PORT``; a node with a peer port
(``HOST:PORT/PEERPORT`` in the cluster list) binds a second one there for its peers' Raft and
snapshot frames. With keys the peer port admits only ``ns-peer`` keys (its own ZAP domain), and
the client port then takes no peer frame at all; a peer port's frames reach the intake with
``PEER_MARK`` before their identity, so it can tell where they came in. A node's replies to a
client go back through the client ROUTER, its Raft messages to peer ``j`` through its own
DEALER connected to ``j``'s peer address. Peer DEALERs set ZMQ_IMMEDIATE, so a message for a
peer that is down is dropped at once (Raft resends what matters) instead of piling up for a
process that may never return.

Bounds: a peer DEALER queues at most ``PEER_HWM`` frames (beyond: dropped and counted); the
ROUTER queues at most ``CLIENT_HWM`` frames per client (beyond: ZeroMQ drops replies to a client
that does not read them; the client times out and retries); ZMQ_MAXMSGSIZE makes ZeroMQ cut a
connection that sends a frame over ``wire.MAX_PEER_FRAME`` (over ``CLIENT_MAX_MSG`` on a client
port apart from the peer port). All sends are non-blocking. The
ROUTER is ZMQ_ROUTER_MANDATORY, so a frame for a client whose queue is full, or that is gone,
fails visibly: a failed watch push is reported to ``on_push_failed`` (the watch hub cancels
the watches or forgets the client), a failed reply is counted.

Output is batched: the node queues Raft messages and client replies during a step
(``queue_messages``, ``queue_reply``, ``queue_push``, into an ``Outbox``) and ``flush`` sends one
frame per peer and per client (replies first, then watch pushes). This is the ZeroMQ
implementation of ``seam.Transport``; ``memtransport.py`` is its in-memory twin.
"""
from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from nameservice import wire
from nameservice.address import (
    bind_endpoint,
    client_address,
    connect_endpoint,
    parse_member,
    peer_address,
)
from nameservice.security.context import current as security
from nameservice.security.rules import Rule
from nameservice.server.seam import PEER_MARK, Outbox, PushFailed, push_frames

PEER_HWM = 10_000
CLIENT_HWM = 10_000
RECV_HWM = 100_000
CLIENT_MAX_MSG = 2 * wire.MAX_CLIENT_FRAME
"""A client port's frame limit when the peers have a port of their own (libzmq cuts the
connection; frames between ``MAX_CLIENT_FRAME`` and this are counted and dropped)."""
MAX_SENDERS = 100_000
"""Connections whose sender is remembered between two drains (then forgotten, and relearned)."""


class NodeTransport:
    """The sockets of one node. Receiving is ``await receive()`` then ``drain()``."""

    def __init__(self, ctx: zmq.asyncio.Context, node_id: int, cluster: dict[int, str]) -> None:
        client, peer = parse_member(cluster[node_id])
        self.peer_port = peer != client
        """Whether peers send to a port of their own."""
        self._security = security()
        self.secure = self._security.secure
        self.router = self._bind(ctx, client, CLIENT_MAX_MSG if self.peer_port
                                 else wire.MAX_PEER_FRAME, peers_only=False)
        self._router: zmq.Socket[bytes] = zmq.Socket.shadow(self.router.underlying)
        self.peer_router: zmq.asyncio.Socket | None = None
        self._peer_router: zmq.Socket[bytes] | None = None
        if self.peer_port:
            self.peer_router = self._bind(ctx, peer, wire.MAX_PEER_FRAME, peers_only=True)
            self._peer_router = zmq.Socket.shadow(self.peer_router.underlying)
        self._readable: asyncio.Event | None = None  # made, with the readers, on first receive
        self._reading: list[int] = []  # descriptors registered with self._loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._senders: dict[bytes, Rule | None] = {}
        self._ctx = ctx
        self._peers: dict[int, zmq.Socket] = {}
        self._peer_async: dict[int, tuple[str, zmq.asyncio.Socket]] = {}
        self.set_peers({peer: address for peer, address in cluster.items() if peer != node_id})
        self.peer_drops = 0
        self.reply_drops = 0
        self._out = Outbox()
        # Queuing is the outbox's own (bound here: it is on every reply's path).
        self.queue_messages = self._out.queue_messages
        self.queue_reply = self._out.queue_reply
        self.queue_push = self._out.queue_push
        self.on_push_failed: PushFailed | None = None
        """Called with ``(identity, items, gone)`` for pushes that could not be sent; ``gone``:
        the client is not connected (else its queue is full)."""

    def _bind(self, ctx: zmq.asyncio.Context, address: str, max_msg: int,
              peers_only: bool) -> zmq.asyncio.Socket:
        sock = ctx.socket(zmq.ROUTER)
        for opt, value in ((zmq.LINGER, 0), (zmq.RCVHWM, RECV_HWM), (zmq.SNDHWM, CLIENT_HWM),
                           (zmq.MAXMSGSIZE, max_msg), (zmq.ROUTER_MANDATORY, 1)):
            sock.setsockopt(opt, value)
        self._security.serve(sock, peers_only=peers_only)
        try:
            sock.bind(bind_endpoint(address))
        except zmq.ZMQError:
            sock.close(0)
            raise
        return sock

    def set_peers(self, peers: dict[int, str]) -> None:
        """Keep one DEALER to each of ``peers`` (id -> ``HOST:PORT``): connect the new ones,
        close those no longer listed or whose address changed (their queued frames are dropped;
        Raft resends what matters)."""
        for peer, (address, sock) in list(self._peer_async.items()):
            if peers.get(peer) != address:
                sock.close(0)
                del self._peer_async[peer], self._peers[peer]
        for peer, address in peers.items():
            if peer in self._peer_async:
                continue
            sock = self._ctx.socket(zmq.DEALER)
            for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, PEER_HWM), (zmq.IMMEDIATE, 1),
                               (zmq.RECONNECT_IVL, 20), (zmq.RECONNECT_IVL_MAX, 200)):
                sock.setsockopt(opt, value)
            # The node's key is the one trusted for its client address; its peer port is where
            # the frames go.
            self._security.connect(sock, client_address(address))
            sock.connect(connect_endpoint(peer_address(address)))
            self._peer_async[peer] = (address, sock)
            self._peers[peer] = zmq.Socket.shadow(sock.underlying)

    async def receive(self) -> None:
        """Wait until a ROUTER has input (``drain`` takes it; always None).

        The loop watches the ROUTERs' descriptors itself: a ``zmq.asyncio`` receive costs a
        future, a callback and a timer per wake-up, a large share of a follower's CPU under
        load. The descriptor is edge-triggered, so the wait is for a change after a look
        at ``EVENTS`` that found nothing (that look re-arms it)."""
        if self._readable is None:
            self._watch()
        readable = self._readable
        assert readable is not None
        if self.has_input():
            # Input waits already: the loop's other callbacks (ticks, fsync completions) still
            # get their turn first, as they would during a wait.
            await asyncio.sleep(0)
            return
        while True:  # one look at EVENTS per wake-up
            readable.clear()
            await readable.wait()
            if self.has_input():
                return

    def _watch(self) -> None:
        """Register the ROUTERs' descriptors with the running loop."""
        self._readable = readable = asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        for sock in (self._router, self._peer_router):
            if sock is not None:
                fd: int = sock.get(zmq.FD)  # type: ignore[assignment]  # an int option
                loop.add_reader(fd, readable.set)
                self._reading.append(fd)

    def drain(self, limit: int) -> list[list[bytes]]:
        """Receive up to ``limit`` waiting messages without blocking (each ``[identity, ...]``):
        the peer port's first (their identities marked ``PEER_MARK``), then the clients'."""
        out: list[list[bytes]] = []
        if self.secure and len(self._senders) > MAX_SENDERS:
            self._senders.clear()  # refilled by the next message of each connection
        if self._peer_router is not None:
            recv_peer = self._peer_router.recv_multipart
            sender = self._security.sender if self.secure else None
            try:
                while len(out) < limit:
                    if sender is None:
                        frames = recv_peer(zmq.NOBLOCK)
                    else:  # known by key, so that a revoked member's connection is cut
                        parts = recv_peer(zmq.NOBLOCK, copy=False)
                        sender(parts[-1])
                        frames = [part.bytes for part in parts]
                    frames[0] = PEER_MARK + frames[0]
                    out.append(frames)
            except zmq.Again:
                pass
        try:
            if self.secure:
                while len(out) < limit:
                    out.append(self._note(self._router.recv_multipart(zmq.NOBLOCK, copy=False)))
            else:
                recv = self._router.recv_multipart
                while len(out) < limit:
                    out.append(recv(zmq.NOBLOCK))
        except zmq.Again:
            pass
        return out

    def _note(self, frames: list[zmq.Frame]) -> list[bytes]:
        """A message's bytes, noting whose key sent it (by its connection's identity)."""
        self._senders[frames[0].bytes] = self._security.sender(frames[-1])
        return [frame.bytes for frame in frames]

    def sender(self, identity: bytes) -> Rule | None:
        """The rule of the key behind ``identity``'s latest message (None: no rule)."""
        return self._senders.get(identity)

    def has_input(self) -> bool:
        """Whether a message is waiting on the ROUTER now.

        ZeroMQ's file descriptor is edge-triggered: a send on the ROUTER may consume the edge
        raised by a message that arrived meanwhile, so ``receive()`` could miss it. The node
        checks this after sending and drains at once.
        """
        events: int = self._router.get(zmq.EVENTS)  # type: ignore[assignment]  # an int option
        if self._peer_router is not None:
            events |= int(self._peer_router.get(zmq.EVENTS))
        return bool(events & zmq.POLLIN)

    def send_peer(self, peer: int, data: bytes) -> None:
        """Send one frame to ``peer``; dropped (and counted) if it is down or its queue full."""
        sock = self._peers.get(peer)
        if sock is None:
            return
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.ZMQError:
            self.peer_drops += 1

    def send_client(self, identity: bytes, data: bytes) -> None:
        """Send one frame to the client (or peer) ``identity`` through the ROUTER."""
        try:
            self._router.send_multipart((identity, data), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.reply_drops += 1

    def flush(self) -> bool:
        """Send everything queued. Returns ``has_input()`` after sending to clients (the
        ROUTER may then hold a message whose edge the sends consumed), else False."""
        out = self._out
        if out.messages:
            for peer, data in out.peer_frames():
                self.send_peer(peer, data)
        if not out.replies and not out.pushes:
            return False
        if out.replies:
            send = self.send_client
            for identity, data in out.reply_frames():
                send(identity, data)
        if out.pushes:
            self._send_pushes()
        waiting = self.has_input()
        if waiting and self._readable is not None:
            self._readable.set()  # the receive loop takes it too, round after round
        return waiting

    def _send_pushes(self) -> None:
        send = self._router.send_multipart
        for identity, items in self._out.take_pushes().items():
            frames = push_frames(items)
            for n, (chunk, data) in enumerate(frames):
                try:
                    send((identity, data), zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    gone = exc.errno == zmq.EHOSTUNREACH
                    if self.on_push_failed is not None:
                        failed = [i for c, _ in frames[n:] for i in c] if gone else chunk
                        self.on_push_failed(identity, failed, gone)
                    if gone:
                        break

    def close(self) -> None:
        """Close every socket at once (unsent frames are dropped)."""
        loop = self._loop  # before the sockets close: their descriptor numbers get reused
        if loop is not None and not loop.is_closed():
            for fd in self._reading:
                loop.remove_reader(fd)
        self._reading.clear()
        for _, sock in self._peer_async.values():
            sock.close(0)
        self._peer_async.clear()
        self._peers.clear()
        self.router.close(0)
        if self.peer_router is not None:
            self.peer_router.close(0)


def zmq_transport(node_id: int, cluster: dict[int, str]) -> NodeTransport:
    """The ``TransportFactory`` of a real node: its sockets in a ZeroMQ context of their own."""
    return NodeTransport(zmq.asyncio.Context(), node_id, cluster)
