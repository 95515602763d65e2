"""A name-service client written from docs/ns-protocol.md alone: pyzmq and msgpack.

Nothing of the project is imported here (a test checks it). Blocking and one call at a time:
enough to show that the document tells another language how to write, read, compare-and-swap,
keep leases and watch, with redirects, retries and an exactly-once session.
"""
from __future__ import annotations

import time
from collections import deque

import msgpack
import zmq

VERSION = 1
REQUEST, REPLY, EVENT = 2, 3, 4
OP_WRITE, OP_GET, OP_RANGE, OP_STATUS, OP_KEEPALIVE = 1, 2, 3, 4, 8
OP_WATCH, OP_WATCH_CANCEL = 10, 11
ST_OK, ST_NOT_LEADER, ST_BUSY, ST_BAD_REQUEST, ST_UNAVAILABLE = range(5)
R_REJECTED = 8
SESSION_EXPIRED, SEQ_TOO_OLD = 5, 6
RETRY_S = 0.005


class Refused(Exception):
    """BAD_REQUEST, or a Rejected result: ``code`` (0 for BAD_REQUEST) and the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class PlainClient:
    """One DEALER per node; calls go to the node believed to lead, and follow redirects."""

    def __init__(self, addresses: list[str], timeout: float = 10.0,
                 attempt_timeout: float = 1.0) -> None:
        self.ctx = zmq.Context()
        self.socks: dict[str, zmq.Socket] = {}
        for address in addresses:
            self.connect(address)
        self.target = addresses[0]
        self.timeout, self.attempt_timeout = timeout, attempt_timeout
        self.rid = 0
        self.replies: dict[int, list] = {}
        self.pushes: dict[str, deque] = {}  # address -> push items received from it
        self.redirects = 0
        self.client_id = 0
        self.seq = 0

    def connect(self, address: str) -> zmq.Socket:
        sock = self.socks.get(address)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            for option, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.RECONNECT_IVL, 20),
                                  (zmq.RECONNECT_IVL_MAX, 500), (zmq.SNDHWM, 100_000),
                                  (zmq.RCVHWM, 100_000), (zmq.MAXMSGSIZE, 512 << 20)):
                sock.setsockopt(option, value)
            sock.connect(f"tcp://{address}")
            self.socks[address] = sock
        return sock

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(linger=0)
        self.ctx.term()

    # frames

    def send(self, address: str, items: list) -> bool:
        frame = bytes((VERSION, REQUEST)) + msgpack.packb(items, use_bin_type=True)
        try:
            self.connect(address).send(frame, zmq.DONTWAIT)
            return True
        except zmq.ZMQError:  # not connected (IMMEDIATE) or full
            return False

    def receive(self, timeout: float) -> None:
        """Read what arrives within ``timeout``: replies by rid, pushes by node."""
        poller = zmq.Poller()
        for sock in self.socks.values():
            poller.register(sock, zmq.POLLIN)
        for sock, _ in poller.poll(max(0, int(timeout * 1000))):
            address = next(a for a, s in self.socks.items() if s is sock)
            while True:
                try:
                    data = sock.recv(zmq.DONTWAIT)
                except zmq.ZMQError:
                    break
                if len(data) < 3 or data[0] != VERSION:
                    continue
                body = msgpack.unpackb(data[2:], raw=False)
                if data[1] == REPLY:
                    for rid, status, payload in body:
                        self.replies[rid] = [status, payload]
                elif data[1] == EVENT:
                    self.pushes.setdefault(address, deque()).extend(body)

    # calls

    def call(self, op: int, *args, address: str | None = None):
        """Send ``[rid, op, *args]`` until a node answers OK; return the payload."""
        self.rid += 1
        rid = self.rid
        return self.call_item([rid, op, *args], address)

    def call_item(self, item: list, address: str | None = None):
        rid = item[0]
        deadline = time.monotonic() + self.timeout
        unsent: dict[str, float] = {}  # node -> since when its connection is not up
        while time.monotonic() < deadline:
            node = address or self.target
            if not self.send(node, [item]):
                # Not connected (yet: a new address's handshake, or it is down): retry in a
                # moment; after an attempt timeout, another node.
                since = unsent.setdefault(node, time.monotonic())
                if address is None and time.monotonic() - since > self.attempt_timeout:
                    self.next_node(node)
                time.sleep(RETRY_S)
                continue
            attempt_end = time.monotonic() + self.attempt_timeout
            while rid not in self.replies and time.monotonic() < attempt_end:
                self.receive(attempt_end - time.monotonic())
            reply = self.replies.pop(rid, None)
            if reply is None:  # silent: try the next node
                self.next_node(node)
                continue
            status, payload = reply
            if status == ST_OK:
                return payload
            if status == ST_BAD_REQUEST or address is not None:
                raise Refused(0, str(payload))
            if status == ST_NOT_LEADER and isinstance(payload, str) and payload != node:
                self.redirects += 1
                self.connect(payload)
                self.target = payload
                continue
            if status != ST_BUSY:
                self.next_node(node)
            time.sleep(RETRY_S)
        raise TimeoutError(f"no answer to {item[:2]}")

    def next_node(self, node: str) -> None:
        nodes = list(self.socks)
        self.target = nodes[(nodes.index(node) + 1) % len(nodes)]

    # sessions and writes

    def write(self, command: list) -> list:
        """A session write: ``[16, client_id, seq, ack, command]``; returns the result."""
        if not self.client_id:
            result = self.call(OP_WRITE, [9])
            assert result[0] == 6, result
            self.client_id, self.seq = result[1], 0
        self.seq += 1
        return self.write_seq(self.seq, command)

    def write_seq(self, seq: int, command: list) -> list:
        """The session write ``seq`` (a retry repeats an earlier one exactly)."""
        result = self.call(OP_WRITE, [16, self.client_id, seq, seq - 1, command])
        if result[0] == R_REJECTED:
            if result[1] in (SESSION_EXPIRED, SEQ_TOO_OLD):
                self.client_id = 0  # outcome unknown: a new session next time
            raise Refused(result[1], result[2])
        return result

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        result = self.write([1, key, value, lease, False])
        assert result[0] == 1, result
        return result[1]

    def cas(self, key: bytes, value: bytes | None, kind: int, expect) -> list:
        """``[3, succeeded, revision, kv]``; kind 0: value equals, 1: mod_revision, 2: absent."""
        result = self.write([4, key, value, kind, expect, 0])
        assert result[0] == 3, result
        return result

    def get(self, key: bytes, consistent: bool = True) -> tuple[list | None, int]:
        kv, revision = self.call(OP_GET, key, consistent)
        return kv, revision

    def lease_grant(self, ttl_ms: int) -> tuple[int, int]:
        result = self.write([6, 0, ttl_ms])
        assert result[0] == 4, result
        return result[1], result[2]

    def lease_keepalive(self, lease_id: int) -> int:
        return self.call(OP_KEEPALIVE, lease_id)

    def lease_revoke(self, lease_id: int) -> list:
        return self.write([7, lease_id])

    # watches

    def watch(self, address: str, wid: int, key: bytes, prefix: bool, from_rev: int) -> int:
        """Create a watch on ``address``; the revision after which its events come."""
        revision, oldest = self.call(OP_WATCH, wid, key, prefix, from_rev, address=address)
        if oldest:
            raise Refused(0, f"compacted: the history starts at {oldest}")
        return revision

    def events(self, address: str, wid: int, covered: int, until: int,
               timeout: float = 10.0) -> list[tuple[int, list]]:
        """The events of watch ``wid`` after ``covered`` up to revision ``until`` at least, as
        ``(type, key_value)``; checks that each push starts where the previous one ended."""
        out = []
        deadline = time.monotonic() + timeout
        while covered < until:
            queue = self.pushes.get(address)
            if not queue:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"watch {wid} covered {covered}, wanted {until}")
                self.receive(0.05)
                continue
            ids, kind, *rest = queue.popleft()
            if wid not in ids:
                continue  # a heartbeat, or another watch's push
            if kind != 0:
                raise Refused(0, f"watch cancelled: {rest}")
            start, to, events = rest
            if start != covered + 1:
                raise AssertionError(f"a gap: push from {start}, covered {covered}")
            out.extend((event_type, kv) for event_type, kv in events)
            covered = to
        return out
