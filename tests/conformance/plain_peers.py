"""A producer and a consumer written from docs/protocol.md alone: pyzmq, msgpack and struct.

Nothing of fabric (or the name service) is imported here — a test checks it — so these peers
show that the document is enough to talk to fabric's own intermediaries and ports. They follow
the document's sections *Connections*, *Timing*, *Credit*, *The producer*, *The consumer* and
*Conformance*, and nothing else; where the document gives a choice, the comment says which.

    python -m tests.conformance.plain_peers producer --channel C --endpoints E1,E2 \
        --index K --count N [--rate R] [--no-monitor]
    python -m tests.conformance.plain_peers consumer --channel C --endpoints E1,E2 \
        --out FILE [--rate R] [--no-monitor]

The producer sends the integers ``K << 32 | i`` for i in [0, N) (at most R per second), waits
until every one is acknowledged, says GOODBYE, prints ``sent N`` and ``stats {JSON}``, and exits
0 (3 if SIGTERM came first; then it lists what it still holds on stderr). The consumer prints
``ready`` once started, handles at most R messages per second (0: as they come), and appends
one 9-byte record per handled message to FILE (u64 payload, u8 redelivered, little-endian, as
fabric's test consumer); on SIGTERM it leaves
(DRAIN, the barrier, GOODBYE), prints ``stats {JSON}`` and exits 0 (3 if the drain timed out).
``--no-monitor``: detect connections as a peer without a socket monitor must.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import time
from collections import deque

import msgpack
import zmq

# -- the protocol's numbers (docs/protocol.md) ---------------------------------------------------

VERSION = 1
(T_HELLO, T_HEARTBEAT, T_BATCH, T_ACK, T_NACK, T_PEER_GONE, T_WHO, T_DRAIN, T_CLAIM,
 T_CLAIMED, T_GOODBYE) = range(1, 12)
ROLE_PRODUCER, ROLE_CONSUMER = 1, 2
MAX_FRAME = 4 * 1024 * 1024

HEARTBEAT_S = 0.1
TIMEOUT_S = 3 * HEARTBEAT_S
CONSUMER_TIMEOUT_S = 2.0
TICK_S = 0.01
FREEZE_S = max(HEARTBEAT_S, TIMEOUT_S - HEARTBEAT_S)
ROUND_DEADLINE_S = CONSUMER_TIMEOUT_S + 2 * TIMEOUT_S
NACK_RETRY_S = HEARTBEAT_S
CLAIM_WAIT_S = TIMEOUT_S
GOODBYE_LINGER_MS = 250
HOLD_ENTRIES = 4096

HELLO = struct.Struct(">BBBB16sI")  # version, type, role, flags, peer id, credit; then channel
BATCH = struct.Struct(">BBBB16sQIIQ")  # ..., flags, 0, producer id, first_seq, count, skip,
#                                        acked_below; then the msgpack body
ACK = struct.Struct(">BBBB16s16sI")  # ..., flags, 0, producer id, consumer id, credit
ENTRY = struct.Struct(">QI")  # first_seq, handled
SEQ = struct.Struct(">Q")
ROUND = struct.Struct(">BBBBI16s")  # CLAIM and CLAIMED: ..., flags, 0, round, producer id
RECORD = struct.Struct("<QB")

HEARTBEAT = bytes((VERSION, T_HEARTBEAT))
DRAIN = bytes((VERSION, T_DRAIN))
GOODBYE = bytes((VERSION, T_GOODBYE))
MONITOR_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)


def normalise(endpoint: str) -> str:
    """The one normalisation of endpoint names: ``tcp://`` in front when there is no scheme."""
    return endpoint if "://" in endpoint else "tcp://" + endpoint


def ack_frame(pid: bytes, cid: bytes, credit: int, entries, hold: bool = False) -> bytes:
    head = ACK.pack(VERSION, T_ACK, 1 if hold else 0, 0, pid, cid, credit)
    return head + b"".join(ENTRY.pack(seq, handled) for seq, handled in entries)


class BadFrame(Exception):
    """A frame that is malformed for its receiver: counted and dropped."""


# -- connections (docs/protocol.md, "Connections") -----------------------------------------------

class Link:
    """One connection to one intermediary: a DEALER that never carries two connections."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = normalise(endpoint)
        self.sock: zmq.Socket | None = None
        self.mon: zmq.Socket | None = None
        self.gen = 0  # socket generation
        self.connected = False  # monitor: handshake seen
        self.up = False  # HELLO sent: data may flow
        self.opened_at = self.last_heard = self.last_sent = 0.0
        self.load = 0  # producer: unacknowledged messages sent through it
        self.draining = False  # producer: the intermediary drains
        self.drains_asked = self.drains_answered = 0  # consumer: its DRAIN barrier
        self.epoch = 0  # consumer: +1 per HELLO (credit of batches from before is not returned)
        self.owed = 0  # consumer: credit to return to this intermediary

    def send(self, frame: bytes) -> bool:
        if not self.up:
            return False
        return self.send_now(frame)

    def send_now(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame, zmq.DONTWAIT)
            return True
        except zmq.ZMQError:
            return False


class Peer:
    """What producer and consumer share: links, HELLO, heartbeats, losses, the freeze rule."""

    def __init__(self, role: int, peer_id: bytes, channel: str, endpoints: list[str],
                 credit: int, monitor: bool) -> None:
        self.ctx = zmq.Context()
        self.role = role
        self.id = peer_id
        self.rid = (b"P" if role == ROLE_PRODUCER else b"C") + peer_id
        self.monitor = monitor
        self.hello = HELLO.pack(VERSION, T_HELLO, role, 0, peer_id, credit) + channel.encode()
        self.hello_again = HELLO.pack(VERSION, T_HELLO, role, 1, peer_id, credit) + channel.encode()
        self.links = [Link(endpoint) for endpoint in endpoints]
        self.stats = {"bad_frames": 0, "intermediaries_lost": 0, "frozen": 0}
        self.stop = False
        now = time.monotonic()
        self.last_tick = now
        for link in self.links:
            self.open(link, now)

    # sockets

    def open(self, link: Link, now: float) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.rid)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_FRAME)
        if self.monitor:
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            link.mon = sock.get_monitor_socket(MONITOR_EVENTS)  # before connect
        else:
            sock.setsockopt(zmq.RECONNECT_IVL, -1)  # never reconnect silently
        sock.connect(link.endpoint)
        link.sock = sock
        link.gen += 1
        link.connected = link.up = False
        link.opened_at = now

    def shut(self, link: Link, goodbye: bool = False) -> None:
        linger = GOODBYE_LINGER_MS if goodbye and link.send(GOODBYE) else 0
        link.up = link.connected = False
        if link.mon is not None:
            link.sock.disable_monitor()
            link.mon.close(linger=0)
            link.mon = None
        link.sock.close(linger=linger)

    def greet(self, link: Link, now: float) -> None:
        """HELLO as the connection's first frame; the link is up once it went out."""
        if link.send_now(self.hello):
            link.up = True
            link.epoch += 1
            link.owed = 0  # the HELLO sets the credit afresh
            link.last_heard = link.last_sent = now
            link.draining = False
            link.drains_asked = link.drains_answered = 0
            self.on_up(link, now)
        elif not self.monitor and now - link.opened_at > TIMEOUT_S:
            self.shut(link)  # nobody listening: a fresh socket
            self.open(link, now)

    def lose(self, link: Link, now: float) -> None:
        """The connection is gone: read what it delivered before, then a fresh socket."""
        link.up = False
        while True:
            try:
                frame = link.sock.recv(zmq.DONTWAIT)
            except zmq.ZMQError:
                break
            self.frame(link, frame, now)
        self.shut(link)
        self.open(link, now)
        self.stats["intermediaries_lost"] += 1
        self.on_down(link, now)

    # the loop

    def poll(self, timeout: float) -> None:
        poller = zmq.Poller()
        for link in self.links:
            poller.register(link.sock, zmq.POLLIN)
            if link.mon is not None:
                poller.register(link.mon, zmq.POLLIN)
        ready = dict(poller.poll(max(0, int(timeout * 1000))))
        now = time.monotonic()
        for link in self.links:
            if link.mon is not None and link.mon in ready:
                self.monitor_events(link, now)
            sock = link.sock
            if sock in ready:
                for _ in range(1000):
                    if link.sock is not sock:
                        break  # lost and reopened meanwhile
                    try:
                        frame = sock.recv(zmq.DONTWAIT)
                    except zmq.ZMQError:
                        break
                    self.frame(link, frame, now)

    def monitor_events(self, link: Link, now: float) -> None:
        mon = link.mon
        while link.mon is mon:
            try:
                frames = mon.recv_multipart(zmq.DONTWAIT)
            except zmq.ZMQError:
                return
            if len(frames) != 2 or len(frames[0]) != 6:
                continue
            event, _ = struct.unpack("=HI", frames[0])
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED and not link.connected:
                link.connected = True
                self.greet(link, now)
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED) and link.connected:
                self.lose(link, now)

    def tick(self, now: float) -> None:
        gap, self.last_tick = now - self.last_tick, now
        frozen = gap > FREEZE_S  # our own stall: the silence may be ours
        if frozen:
            self.stats["frozen"] += 1
        for link in self.links:
            if frozen:
                link.last_heard = now
            if not link.up:
                if link.connected or not self.monitor:
                    self.greet(link, now)
                continue
            if not frozen and now - link.last_heard > TIMEOUT_S:
                self.lose(link, now)
            elif now - link.last_sent >= HEARTBEAT_S and link.send(HEARTBEAT):
                link.last_sent = now

    def frame(self, link: Link, frame: bytes, now: float) -> None:
        link.last_heard = now
        try:
            if len(frame) < 2 or len(frame) > MAX_FRAME or frame[0] != VERSION:
                raise BadFrame("size or version")
            kind = frame[1]
            if kind == T_HEARTBEAT:
                if len(frame) != 2:
                    raise BadFrame("HEARTBEAT with a body")
            elif kind == T_WHO:
                if len(frame) != 2:
                    raise BadFrame("WHO with a body")
                if link.up and link.send_now(self.hello_again):
                    link.epoch += 1
                    link.owed = 0  # the HELLO sets the credit afresh
                    self.on_again(link, now)
            else:
                self.on_frame(link, kind, frame, now)
        except BadFrame:
            self.stats["bad_frames"] += 1

    def live(self) -> list[Link]:
        return [link for link in self.links if link.up]

    def close(self, goodbye: bool) -> None:
        for link in self.links:
            self.shut(link, goodbye)
        self.ctx.term()  # waits (at most the linger) until each GOODBYE left

    # the roles

    def on_up(self, link: Link, now: float) -> None:
        pass

    def on_again(self, link: Link, now: float) -> None:
        pass

    def on_down(self, link: Link, now: float) -> None:
        pass

    def on_frame(self, link: Link, kind: int, frame: bytes, now: float) -> None:
        raise BadFrame(f"type {kind}")


# -- the producer (docs/protocol.md, "The producer") ---------------------------------------------

class Sent:
    __slots__ = ("first_seq", "count", "frame", "acked", "via", "claimed_by")

    def __init__(self, first_seq: int, count: int, frame: bytes) -> None:
        self.first_seq, self.count, self.frame = first_seq, count, frame
        self.acked = 0
        self.via: Link | None = None
        self.claimed_by: bytes | None = None


class Round:
    __slots__ = ("number", "lost", "orphans", "asked", "answers", "unanswered", "deadline")

    def __init__(self, number: int, lost: str, orphans: list[int], deadline: float) -> None:
        self.number, self.lost, self.orphans, self.deadline = number, lost, orphans, deadline
        self.asked: dict[Link, int] = {}  # link -> its socket generation when asked
        self.answers = 0
        self.unanswered = False


def redelivered(frame: bytes, skip: int) -> bytes:
    out = bytearray(frame)
    out[2] |= 1
    out[32:36] = skip.to_bytes(4, "big")
    return bytes(out)


class Producer(Peer):
    def __init__(self, channel: str, endpoints: list[str], index: int, count: int, rate: float,
                 monitor: bool, batch_max: int = 100, window: int = 10_000) -> None:
        self.pid = os.urandom(16)
        super().__init__(ROLE_PRODUCER, self.pid, channel, endpoints, 0, monitor)
        self.base, self.count, self.rate = index << 32, count, rate
        self.batch_max, self.window = batch_max, window
        self.next_seq = 0
        self.unacked = 0
        self.store: dict[int, Sent] = {}
        self.resend: dict[int, float] = {}
        self.rounds: dict[int, Round] = {}
        self.next_round = 0
        self.stats.update(messages_sent=0, batches_sent=0, batches_resent=0, messages_acked=0,
                          stale_acks=0, claim_rounds=0, claim_rounds_timed_out=0,
                          redelivered_resends=0)

    def run(self) -> int:
        start = time.monotonic()
        while not self.stop and (self.next_seq < self.count or self.store):
            now = time.monotonic()
            due = self.count if not self.rate else min(self.count, int((now - start) * self.rate))
            while self.next_seq < due and self.unacked < self.window:
                self.new_batch(min(self.batch_max, due - self.next_seq))
            self.poll(TICK_S)
            now = time.monotonic()
            if now - self.last_tick >= TICK_S:
                self.tick(now)
                self.timers(now)
        if self.stop:
            for sent in self.store.values():
                print(f"held seq={sent.first_seq} count={sent.count} acked={sent.acked} "
                      f"via={sent.via and sent.via.endpoint} claimed={sent.claimed_by}",
                      file=sys.stderr)
        self.close(goodbye=True)
        print(f"sent {self.next_seq}", flush=True)
        print("stats " + json.dumps(self.stats), flush=True)
        return 3 if self.stop else 0

    def acked_below(self) -> int:
        return min(self.store) if self.store else self.next_seq

    def new_batch(self, n: int) -> None:
        seq = self.next_seq
        body = msgpack.packb([self.base | i for i in range(seq, seq + n)], use_bin_type=True)
        frame = BATCH.pack(VERSION, T_BATCH, 0, 0, self.pid, seq, n, 0, self.acked_below()) + body
        self.next_seq += n
        self.unacked += n
        self.stats["messages_sent"] += n
        sent = self.store[seq] = Sent(seq, n, frame)
        self.dispatch(sent, first=True)

    def dispatch(self, sent: Sent, first: bool = False) -> None:
        """Through the least loaded intermediary that is up and not draining."""
        for link in sorted((lk for lk in self.links if lk.up and not lk.draining),
                           key=lambda lk: lk.load):
            if link.send(sent.frame):
                sent.via = link
                link.load += sent.count - sent.acked
                self.stats["batches_sent" if first else "batches_resent"] += 1
                return
        self.resend[sent.first_seq] = 0.0  # nobody can take it now: every tick

    def on_frame(self, link: Link, kind: int, frame: bytes, now: float) -> None:
        if kind == T_ACK:
            self.on_ack(frame)
        elif kind == T_NACK:
            if len(frame) < 12 or (len(frame) - 4) % 8:
                raise BadFrame("NACK size")
            for (seq,) in SEQ.iter_unpack(frame[4:]):
                sent = self.store.get(seq)
                if sent is None or sent.via is not link:
                    self.stats["stale_acks"] += 1  # resent elsewhere since: ignored
                    continue
                link.load -= sent.count - sent.acked
                sent.via = None
                self.resend[seq] = now + NACK_RETRY_S
        elif kind == T_PEER_GONE:
            if len(frame) != 20:
                raise BadFrame("PEER_GONE size")
            gone = frame[4:20]
            for sent in list(self.store.values()):
                if sent.claimed_by == gone:
                    sent.claimed_by = None
                    sent.frame = redelivered(sent.frame, sent.acked)
                    self.stats["redelivered_resends"] += 1
                    self.dispatch(sent)
        elif kind == T_DRAIN:
            if len(frame) != 2:
                raise BadFrame("DRAIN size")
            link.draining = True
            link.send(DRAIN)  # the answer: nothing more follows from us
        elif kind == T_CLAIMED:
            if len(frame) != ROUND.size:
                raise BadFrame("CLAIMED size")
            _, _, flags, _, number, pid = ROUND.unpack(frame)
            rnd = self.rounds.get(number)
            if pid != self.pid or rnd is None or rnd.asked.get(link) != link.gen:
                self.stats["stale_acks"] += 1
                return
            del rnd.asked[link]
            rnd.answers += 1
            rnd.unanswered |= bool(flags & 1)
            self.check_round(rnd, now)
        else:
            raise BadFrame(f"type {kind} is not sent to a producer")

    def on_ack(self, frame: bytes) -> None:
        if len(frame) < ACK.size or (len(frame) - ACK.size) % ENTRY.size:
            raise BadFrame("ACK size")
        _, _, flags, _, pid, cid, _ = ACK.unpack_from(frame)
        if pid != self.pid:
            raise BadFrame("ACK for another producer")
        freed = 0
        for seq, handled in ENTRY.iter_unpack(frame[ACK.size:]):
            sent = self.store.get(seq)
            if sent is None or handled > sent.count:
                self.stats["stale_acks"] += 1
                continue
            if handled > sent.acked:
                freed += handled - sent.acked
                if sent.via is not None:
                    sent.via.load -= handled - sent.acked
                sent.acked = handled
            if sent.acked >= sent.count:
                del self.store[seq]
                self.resend.pop(seq, None)
            elif flags & 1:  # HOLD: that consumer holds the rest
                sent.claimed_by = cid
                self.resend.pop(seq, None)
                if sent.via is not None:
                    sent.via.load -= sent.count - sent.acked
                    sent.via = None
        self.unacked -= freed
        self.stats["messages_acked"] += freed

    # failover

    def on_up(self, link: Link, now: float) -> None:
        for rnd in list(self.rounds.values()):
            if rnd.asked.get(link) != link.gen:
                self.ask(rnd, link)

    def on_down(self, link: Link, now: float) -> None:
        for rnd in list(self.rounds.values()):
            if rnd.asked.pop(link, None) is not None:
                self.check_round(rnd, now)
        orphans = []
        for sent in self.store.values():
            if sent.via is link:
                sent.via = None
                orphans.append(sent.first_seq)
        link.load = 0
        if not orphans:
            return
        rnd = Round(self.next_round, link.endpoint, orphans, now + ROUND_DEADLINE_S)
        self.next_round = (self.next_round + 1) & 0xFFFFFFFF
        self.rounds[rnd.number] = rnd
        self.stats["claim_rounds"] += 1
        for other in self.links:
            if other is not link and other.up:
                self.ask(rnd, other)

    def ask(self, rnd: Round, link: Link) -> None:
        claim = ROUND.pack(VERSION, T_CLAIM, 0, 0, rnd.number, self.pid) + rnd.lost.encode()
        if link.send(claim):
            rnd.asked[link] = link.gen

    def check_round(self, rnd: Round, now: float, deadline: bool = False) -> None:
        timed_out = deadline and now >= rnd.deadline
        if not timed_out and (rnd.asked or not rnd.answers):
            return
        del self.rounds[rnd.number]
        if timed_out:
            self.stats["claim_rounds_timed_out"] += 1
        for seq in rnd.orphans:
            sent = self.store.get(seq)
            if sent is None or sent.via is not None or sent.claimed_by is not None:
                continue
            if timed_out or rnd.unanswered:
                sent.frame = redelivered(sent.frame, sent.acked)
                self.stats["redelivered_resends"] += 1
            self.dispatch(sent)

    def timers(self, now: float) -> None:
        for seq, due in list(self.resend.items()):
            if due <= now:
                del self.resend[seq]
                sent = self.store.get(seq)
                if sent is not None and sent.via is None and sent.claimed_by is None:
                    self.dispatch(sent)
        for rnd in list(self.rounds.values()):
            self.check_round(rnd, now, deadline=True)


# -- the consumer (docs/protocol.md, "The consumer") ---------------------------------------------

class Held:
    """A batch the consumer remembers: how much of it is handled, the link of its latest copy
    (None once that link is lost: claimed), the endpoint of its latest copy (for CLAIMs), and
    the link and HELLO its credit belongs to."""

    __slots__ = ("count", "handled", "via", "through", "charged", "epoch", "payloads", "red")

    def __init__(self, count: int, skip: int, via: Link, payloads: list, red: bool) -> None:
        self.count, self.handled = count, skip
        self.via: Link | None = via
        self.through = via.endpoint
        self.charged, self.epoch = via, via.epoch
        self.payloads, self.red = payloads, red


class PendingClaim:
    __slots__ = ("number", "pid", "lost", "via", "via_gen", "lost_link", "lost_gen", "deadline")


class Consumer(Peer):
    """Handles at most ``rate`` messages per second (0: as they come), in arrival order."""

    def __init__(self, channel: str, endpoints: list[str], out: str, monitor: bool,
                 rate: float = 0.0, prefetch: int = 1000) -> None:
        self.cid = os.urandom(16)
        self.prefetch = prefetch
        super().__init__(ROLE_CONSUMER, self.cid, channel, endpoints, prefetch, monitor)
        self.fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.rate = rate
        self.windows: dict[bytes, dict] = {}  # pid -> {"below": int, "batches": {seq: Held}}
        self.queue: deque[tuple[bytes, int, Held]] = deque()  # received, not yet handled
        self.acks: dict[tuple[Link | None, bytes], dict[int, int]] = {}  # None: any live link
        self.holds: dict[bytes, dict[int, int]] = {}  # claims waiting for a live link
        self.claims: list[PendingClaim] = []
        self.agains = 0
        self.stats.update(messages_delivered=0, batches_received=0, duplicate_batches=0,
                          stale_batches=0, redelivered_messages=0, claims_answered=0,
                          claims_unknown=0)

    def run(self) -> int:
        leaving_until = None
        asked: dict[Link, tuple[int, int]] = {}
        mark = -1
        complete = False
        started = time.monotonic()
        while True:
            self.poll(0 if self.queue else TICK_S)
            now = time.monotonic()
            self.deliver(now, started)
            self.flush_acks()
            if now - self.last_tick >= TICK_S:
                self.tick(now)
                self.send_holds()
                self.answer_claims(now)
            if self.stop and leaving_until is None:
                leaving_until = now + 5.0
            if leaving_until is None:
                continue
            # Leaving: DRAIN on every link; when each answered and nothing arrived meanwhile
            # (the barrier), GOODBYE.
            if now > leaving_until:
                break
            if self.queue or self.acks or self.holds:
                continue
            if not all(link.gen != gen or not link.up or link.drains_answered >= n
                       for link, (gen, n) in asked.items()):
                continue
            received = (self.stats["batches_received"] + self.stats["duplicate_batches"]
                        + self.agains)
            if asked and received == mark and all(
                    link in asked and asked[link][0] == link.gen for link in self.live()):
                complete = True
                break
            mark, asked = received, {}
            for link in self.live():
                if link.send(DRAIN):
                    link.drains_asked += 1
                    asked[link] = (link.gen, link.drains_asked)
        self.close(goodbye=complete and self.finished())
        os.close(self.fd)
        print("stats " + json.dumps(self.stats), flush=True)
        return 0 if complete else 3

    def finished(self) -> bool:
        """Everything received is handled and acknowledged: GOODBYE may be said."""
        return not (self.queue or self.acks or self.holds) and all(
            held.handled >= held.count
            for window in self.windows.values() for held in window["batches"].values())

    def window(self, pid: bytes) -> dict:
        window = self.windows.get(pid)
        if window is None:
            window = self.windows[pid] = {"below": 0, "batches": {}}
        return window

    def on_frame(self, link: Link, kind: int, frame: bytes, now: float) -> None:
        if kind == T_BATCH:
            self.on_batch(link, frame)
        elif kind == T_CLAIM:
            self.on_claim(link, frame, now)
        elif kind == T_DRAIN:
            if len(frame) != 2 or link.drains_answered >= link.drains_asked:
                raise BadFrame("a DRAIN that answers nothing")
            link.drains_answered += 1
        else:
            raise BadFrame(f"type {kind} is not sent to a consumer")

    def on_batch(self, link: Link, frame: bytes) -> None:
        if len(frame) < BATCH.size:
            raise BadFrame("BATCH shorter than its header")
        _, _, flags, _, pid, seq, count, skip, acked_below = BATCH.unpack_from(frame)
        if count == 0 or skip > count:
            raise BadFrame("BATCH count or skip")
        window = self.window(pid)
        if acked_below > window["below"]:  # forget what the producer has acknowledged
            window["below"] = acked_below
            batches = window["batches"]
            for old in [s for s, held in batches.items() if s + held.count <= acked_below]:
                del batches[old]
        batches = window["batches"]
        if seq + count <= window["below"] and seq not in batches:
            self.stats["duplicate_batches"] += 1
            self.stats["stale_batches"] += 1
            link.owed += count
            self.add_ack(link, pid, seq, count)
            return
        known = batches.get(seq)
        if known is not None and known.count == count:
            self.stats["duplicate_batches"] += 1
            known.via, known.through = link, link.endpoint
            link.owed += count
            if known.handled:
                self.add_ack(link, pid, seq, known.handled)
            return
        try:
            payloads = msgpack.unpackb(frame[BATCH.size:], raw=False, strict_map_key=False)
        except Exception:  # any msgpack error: the body does not decode
            payloads = None
        if not isinstance(payloads, list) or len(payloads) != count:
            link.owed += count
            self.add_ack(link, pid, seq, count)
            raise BadFrame("batch body")
        self.stats["batches_received"] += 1
        held = batches[seq] = Held(count, skip, link, payloads, bool(flags & 1))
        link.owed += skip  # the skipped messages' credit at once, the rest as handled
        if skip >= count:
            self.add_ack(link, pid, seq, count)
        else:
            self.queue.append((pid, seq, held))

    def deliver(self, now: float, started: float) -> None:
        budget = (1 << 30 if not self.rate
                  else int((now - started) * self.rate) - self.stats["messages_delivered"])
        while self.queue and budget > 0:
            pid, seq, held = self.queue[0]
            n = min(budget, held.count - held.handled)
            for payload in held.payloads[held.handled:held.handled + n]:
                os.write(self.fd, RECORD.pack(payload if isinstance(payload, int) else 0,
                                              held.red))
            held.handled += n
            budget -= n
            self.stats["messages_delivered"] += n
            if held.red:
                self.stats["redelivered_messages"] += n
            charged = held.charged
            if charged.epoch == held.epoch:  # credit of batches from before a HELLO: never
                charged.owed += n
            self.add_ack(held.via, pid, seq, held.handled)
            if held.handled >= held.count:
                held.payloads = []
                self.queue.popleft()

    # acknowledging (docs/protocol.md, ACK and "Credit")

    def add_ack(self, link: Link | None, pid: bytes, seq: int, handled: int) -> None:
        if link is not None and not link.up:
            link = None
        self.acks.setdefault((link, pid), {})[seq] = handled

    def flush_acks(self) -> None:
        acks, self.acks = self.acks, {}
        for (link, pid), entries in acks.items():
            if link is None or not link.up:
                live = self.live()
                if not live:
                    self.holds.setdefault(pid, {}).update(entries)
                    continue
                link = live[0]
                # A claimed batch's complete ACK goes through this link: if it is lost, the
                # entry is sent again with the claims.
                window = self.window(pid)["batches"]
                for seq, handled in entries.items():
                    held = window.get(seq)
                    if held is not None and held.via is None and handled >= held.count:
                        held.via = link
            credit, link.owed = link.owed, 0
            if not link.send(ack_frame(pid, self.cid, credit, entries.items())):
                link.owed += credit
                self.holds.setdefault(pid, {}).update(entries)
        for link in self.live():
            if link.owed >= self.prefetch // 2:  # credit alone
                credit, link.owed = link.owed, 0
                if not link.send(ack_frame(bytes(16), self.cid, credit, ())):
                    link.owed += credit

    def send_holds(self) -> None:
        live = self.live()
        if not self.holds or not live:
            return
        holds, self.holds = self.holds, {}
        for pid, entries in holds.items():
            items = list(entries.items())
            for start in range(0, len(items), HOLD_ENTRIES):
                chunk = items[start:start + HOLD_ENTRIES]
                frame = ack_frame(pid, self.cid, 0, chunk, hold=True)
                if not any(link.send(frame) for link in live):
                    self.holds.setdefault(pid, {}).update(chunk)

    # failover

    def on_up(self, link: Link, now: float) -> None:
        self.send_holds()  # (credit: the HELLO granted it afresh, and we owe nothing)

    def on_again(self, link: Link, now: float) -> None:
        # The intermediary had forgotten us, and any DRAIN of ours: the barrier starts over.
        link.drains_answered = link.drains_asked
        self.agains += 1

    def on_down(self, link: Link, now: float) -> None:
        self.flush_acks()
        for pid, window in self.windows.items():
            for seq, held in window["batches"].items():
                if held.via is link:
                    held.via = None
                    self.holds.setdefault(pid, {})[seq] = held.handled
        self.send_holds()
        self.answer_claims(now)

    def on_claim(self, link: Link, frame: bytes, now: float) -> None:
        if not ROUND.size < len(frame) <= ROUND.size + 255:
            raise BadFrame("CLAIM size")
        _, _, _, _, number, pid = ROUND.unpack_from(frame)
        try:
            lost = normalise(frame[ROUND.size:].decode())
        except UnicodeDecodeError:
            raise BadFrame("CLAIM endpoint") from None
        claim = PendingClaim()
        claim.number, claim.pid, claim.lost = number, pid, lost
        claim.via, claim.via_gen = link, link.gen
        claim.lost_link = next((lk for lk in self.links if lk.endpoint == lost), None)
        claim.lost_gen = claim.lost_link.gen if claim.lost_link else 0
        claim.deadline = now + CLAIM_WAIT_S if len(self.claims) < 10_000 else 0.0
        if claim.lost_link is None:
            self.stats["claims_unknown"] += 1
        self.claims.append(claim)
        self.answer_claims(now)

    def answer_claims(self, now: float) -> None:
        waiting = []
        for claim in self.claims:
            via, lost = claim.via, claim.lost_link
            if via.gen != claim.via_gen or not via.up:
                continue  # its connection is gone: nobody waits for this answer
            settled = (lost is None or lost is via or lost.gen != claim.lost_gen
                       or not lost.up)
            if (settled or now >= claim.deadline) and self.answer(claim):
                self.stats["claims_answered"] += 1
            else:
                waiting.append(claim)
        self.claims = waiting

    def answer(self, claim: PendingClaim) -> bool:
        """HOLD claims for what came through the lost endpoint, then CLAIMED, on ``via``."""
        window = self.windows.get(claim.pid)
        entries = [] if window is None else [(seq, held.handled)
                                             for seq, held in window["batches"].items()
                                             if held.through == claim.lost]
        for start in range(0, len(entries), HOLD_ENTRIES):
            chunk = entries[start:start + HOLD_ENTRIES]
            if not claim.via.send(ack_frame(claim.pid, self.cid, 0, chunk, hold=True)):
                return False
        return claim.via.send(ROUND.pack(VERSION, T_CLAIMED, 0, 0, claim.number, claim.pid))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plain_peers")
    parser.add_argument("role", choices=["producer", "consumer"])
    parser.add_argument("--channel", required=True)
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="producer: messages sent, consumer: handled, per second (0: all)")
    parser.add_argument("--out")
    parser.add_argument("--no-monitor", action="store_true")
    args = parser.parse_args(argv)
    endpoints = args.endpoints.split(",")
    peer: Producer | Consumer
    if args.role == "producer":
        peer = Producer(args.channel, endpoints, args.index, args.count, args.rate,
                              not args.no_monitor)
    else:
        peer = Consumer(args.channel, endpoints, args.out, not args.no_monitor, args.rate)

    def on_term(*_: object) -> None:
        peer.stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    return peer.run()


if __name__ == "__main__":
    sys.exit(main())
