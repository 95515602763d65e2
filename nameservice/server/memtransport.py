"""The in-memory twin of the node's transport: nodes and clients of one simulated network, in
one process, on one event loop.

A ``MemoryNetwork`` connects the ``MemoryTransport`` of each node (``network.transport`` is a
``TransportFactory``: ``Node(settings, network.transport, storage=MemoryStorage(), ...)``)
and any number of ``MemoryClient``s (``network.client()``). Frames are the bytes of
``nameservice.wire``: a transport queues into the same ``Outbox`` and encodes the same frames
as ``NodeTransport``, and a client sends REQUEST frames and decodes REPLY and EVENT frames. So
a node runs its real code path; only the sockets are replaced.

Delivery: ``flush`` appends each frame to the receiver's inbox at once, in order, and the
receiver's ``receive()`` wakes on the loop. As with ZeroMQ and the node's socket options:

* a frame for a peer that is not bound (its node is down) is dropped and counted
  (``peer_drops``; ZMQ_IMMEDIATE);
* a reply to a client that is not connected is dropped and counted (``reply_drops``), and
  pushes to it are reported to ``on_push_failed`` as gone (ZMQ_ROUTER_MANDATORY).

Faults: ``cut(a, b)`` loses every frame between two endpoints (node addresses, client names)
both ways, silently, as a partition does; ``isolate(a)`` cuts ``a`` from every endpoint;
``heal()`` restores every link. What was delivered stays delivered. Not modelled: queue
limits (high-water marks), frame size limits beyond the node's own checks, latency.
"""
from __future__ import annotations

import asyncio
import errno
from collections import deque

from nameservice import wire
from nameservice.errors import DecodeError
from nameservice.server.seam import Outbox, PushFailed, push_frames

__all__ = ["MemoryClient", "MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """One simulated network of node transports and clients (see module docstring)."""

    def __init__(self) -> None:
        self._nodes: dict[str, MemoryTransport] = {}  # by address
        self._clients: dict[bytes, MemoryClient] = {}  # by identity
        self._cut: set[frozenset[str]] = set()
        self._isolated: set[str] = set()
        self._clients_made = 0
        self.lost = 0
        """Frames lost to cut links."""

    def transport(self, node_id: int, cluster: dict[int, str]) -> MemoryTransport:
        """The transport of node ``node_id``, bound at ``cluster[node_id]`` (a
        ``TransportFactory``). ``OSError`` if a transport is bound there already."""
        return MemoryTransport(self, node_id, cluster)

    def client(self, name: str | None = None) -> MemoryClient:
        """A new client connected to the network (``name``: its endpoint name)."""
        self._clients_made += 1
        return MemoryClient(self, name or f"client-{self._clients_made}")

    # ------------------------------------------------------------------ faults

    def cut(self, a: str, b: str) -> None:
        """Lose every frame between endpoints ``a`` and ``b`` (both ways) until ``heal``."""
        self._cut.add(frozenset((a, b)))

    def isolate(self, endpoint: str) -> None:
        """Lose every frame to and from ``endpoint`` until ``heal``."""
        self._isolated.add(endpoint)

    def heal(self) -> None:
        """Restore every link."""
        self._cut.clear()
        self._isolated.clear()

    def linked(self, a: str, b: str) -> bool:
        """Whether frames between ``a`` and ``b`` get through."""
        return (a not in self._isolated and b not in self._isolated
                and frozenset((a, b)) not in self._cut)

    # ------------------------------------------------------------------ delivery

    def send_to_node(self, sender: str, address: str, identity: bytes, data: bytes) -> bool:
        """Deliver a frame from ``sender`` (seen as ``identity``) to the node at ``address``;
        False if no node is bound there."""
        node = self._nodes.get(address)
        if node is None:
            return False
        if self.linked(sender, address):
            node.deliver(identity, data)
        else:
            self.lost += 1
        return True

    def send_to_client(self, sender: str, identity: bytes, data: bytes) -> bool:
        """Deliver a frame from the node at ``sender`` to client ``identity``; False if no such
        client is connected."""
        client = self._clients.get(identity)
        if client is None:
            return False
        if self.linked(sender, client.name):
            client.deliver(sender, data)
        else:
            self.lost += 1
        return True

    def _bind(self, transport: MemoryTransport) -> None:
        if transport.address in self._nodes:
            raise OSError(errno.EADDRINUSE, f"{transport.address} is bound already")
        self._nodes[transport.address] = transport

    def _unbind(self, transport: MemoryTransport) -> None:
        if self._nodes.get(transport.address) is transport:
            del self._nodes[transport.address]

    def _connect(self, client: MemoryClient) -> None:
        self._clients[client.identity] = client

    def _disconnect(self, client: MemoryClient) -> None:
        self._clients.pop(client.identity, None)


class MemoryTransport:
    """A node's transport on a ``MemoryNetwork`` (implements ``seam.Transport``)."""

    def __init__(self, network: MemoryNetwork, node_id: int, cluster: dict[int, str]) -> None:
        self.address = cluster[node_id]
        self._network = network
        self._peers = {peer: address for peer, address in cluster.items() if peer != node_id}
        self._identity = b"node-%d" % node_id  # what the peers' transports see it as
        self._inbox: deque[list[bytes]] = deque()
        self._arrived = asyncio.Event()
        self._closed = False
        self._out = Outbox()
        self.queue_messages = self._out.queue_messages
        self.queue_reply = self._out.queue_reply
        self.queue_push = self._out.queue_push
        self.peer_drops = 0
        self.reply_drops = 0
        self.on_push_failed: PushFailed | None = None
        network._bind(self)

    def set_peers(self, peers: dict[int, str]) -> None:
        """Send Raft messages to exactly these peers (id -> address) from now on."""
        self._peers = dict(peers)

    def deliver(self, identity: bytes, data: bytes) -> None:
        """A frame arrives from ``identity`` (called by the network)."""
        if not self._closed:
            self._inbox.append([identity, data])
            self._arrived.set()

    async def receive(self) -> list[bytes]:
        """Wait for the next message (``[identity, frame]``)."""
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        return self._inbox.popleft()

    def drain(self, limit: int) -> list[list[bytes]]:
        """Up to ``limit`` messages waiting now."""
        inbox = self._inbox
        return [inbox.popleft() for _ in range(min(limit, len(inbox)))]

    def has_input(self) -> bool:
        """Whether a message is waiting."""
        return bool(self._inbox)

    def send_peer(self, peer: int, data: bytes) -> None:
        """Deliver one frame to node ``peer`` now (dropped and counted if it is not bound)."""
        address = self._peers.get(peer)
        if address is not None and not self._network.send_to_node(
                self.address, address, self._identity, data):
            self.peer_drops += 1

    def flush(self) -> bool:
        """Deliver everything queued; whether input is waiting after sending to clients."""
        out, network, me = self._out, self._network, self.address
        if out.messages:
            for peer, data in out.peer_frames():
                address = self._peers.get(peer)
                if address is not None and not network.send_to_node(
                        me, address, self._identity, data):
                    self.peer_drops += 1
        if not out.replies and not out.pushes:
            return False
        if out.replies:
            for identity, data in out.reply_frames():
                if not network.send_to_client(me, identity, data):
                    self.reply_drops += 1
        if out.pushes:
            for identity, items in out.take_pushes().items():
                frames = push_frames(items)
                for n, (_, data) in enumerate(frames):
                    if not network.send_to_client(me, identity, data):
                        if self.on_push_failed is not None:
                            self.on_push_failed(identity, [i for c, _ in frames[n:] for i in c],
                                                True)
                        break
        return self.has_input()

    def close(self) -> None:
        """Unbind from the network; what was queued or received is dropped."""
        self._closed = True
        self._inbox.clear()
        self._network._unbind(self)


class MemoryClient:
    """A client on a ``MemoryNetwork``: REQUEST frames to nodes by address, REPLY frames
    matched to calls by request id, EVENT frames kept in ``pushes``.

    ``call`` makes one attempt at one node; leader-following and retries are the caller's
    (a write retried with the same session and seq is applied once).
    """

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        self.name = name
        self.identity = name.encode()
        self._network = network
        self._calls: dict[int, asyncio.Future] = {}
        self._rid = 0
        self.pushes: list[tuple[str, list]] = []
        """``(node address, push)`` of every watch push received."""
        self.unmatched: list[tuple[str, list]] = []
        """``(node address, reply)`` of replies no call waited for."""
        self.bad_frames = 0
        network._connect(self)

    def next_rid(self) -> int:
        """A request id not used by this client before."""
        self._rid += 1
        return self._rid

    def send(self, address: str, requests: list) -> bool:
        """Send ``requests`` (each ``[rid, op, arg...]``) in one REQUEST frame, without waiting;
        False if no node is bound at ``address``."""
        data = wire.frame(wire.REQUEST, requests)
        return self._network.send_to_node(self.name, address, self.identity, data)

    async def call(self, address: str, op: int, args: list, *,
                   timeout: float = 1.0) -> tuple[int, object]:
        """Send ``[rid, op, *args]`` to the node at ``address``; ``(status, payload)`` of its
        reply. ``TimeoutError`` if none comes within ``timeout`` (node down, link cut)."""
        rid = self.next_rid()
        future = asyncio.get_running_loop().create_future()
        self._calls[rid] = future
        try:
            self.send(address, [[rid, op, *args]])
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no reply from {address} in {timeout} s") from None
        finally:
            self._calls.pop(rid, None)

    def deliver(self, sender: str, data: bytes) -> None:
        """A frame arrives from the node at ``sender`` (called by the network)."""
        try:
            kind, body = wire.split_frame(data, wire.MAX_PEER_FRAME)
            if kind == wire.REPLY:
                replies = [wire.reply_from_wire(w) for w in body]
            elif kind != wire.EVENT:
                raise DecodeError(f"a client does not accept frames of kind {kind}")
        except DecodeError:
            self.bad_frames += 1
            return
        if kind == wire.EVENT:
            self.pushes += [(sender, item) for item in body]
            return
        for rid, status, payload in replies:
            future = self._calls.pop(rid, None)
            if future is None or future.done():
                self.unmatched.append((sender, [rid, status, payload]))
            else:
                future.set_result((status, payload))

    def close(self) -> None:
        """Disconnect; calls still waiting fail with ``ConnectionError``."""
        self._network._disconnect(self)
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(ConnectionError("client closed"))
