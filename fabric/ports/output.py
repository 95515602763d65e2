"""OutputPort: the producer side of a channel.

A port connects one DEALER socket to every intermediary of its channel. ``send`` appends a
payload to the current batch, which goes out as ONE frame when it is full (``batch_max``
messages or ``batch_bytes``) or at the next turn of the event loop. A message goes out at once,
alone, when no batch went out for ``linger`` seconds (idle), or when it is the first batch of
this turn of the loop and less than one full batch is unacknowledged (light load): such a
producer adds no delay, while a busy one (or one sending many messages in one turn) fills large
batches.

Every batch stays in the port until consumers acknowledge all of its messages. The number of
unacknowledged messages is limited by ``window`` and their payload bytes by ``window_bytes``:
when either is reached, ``send`` waits (backpressure; nothing is ever dropped). A batch's bytes
count until the whole batch is acknowledged. So memory is bounded by ``window_bytes`` plus one
batch (``batch_bytes``), whatever the number of messages sent.

Failover: an intermediary is declared lost when its connection closes (socket monitor) or when
it stays silent for the heartbeat timeout. Its unacknowledged batches are resent through the
others once a *claim round* is over: the port sends CLAIM through every live intermediary, each
forwards it to all its consumers, and each consumer first claims (ACK with the HOLD flag) what it
received through the lost one, then answers; the intermediary answers once every consumer has.
Claimed batches are not resent unless their consumer is reported gone (then they are resent
flagged redelivered); the rest are resent, flagged if a consumer was gone before answering.

Draining: an intermediary that drains sends DRAIN; the port answers DRAIN, sends it no new
batches, and waits for the acknowledgements of what it holds (nothing is resent by timeout).
``remove_endpoint`` on a live intermediary works the same way from this side. ``drain()`` stops
the port itself: no new sends, everything acknowledged (or the timeout), then closed. Closing
sends GOODBYE on every live link (and on a removed one once let go of): the intermediary forgets
this producer at once.

Ordering: messages of one batch arrive in order at one consumer; batches are spread over the
intermediaries (least unacknowledged first) and consumers, so there is no order between batches.

Histograms (``histograms``, None until metrics are served: ``fabric.ports.metrics``), observed
per batch: its messages; its acknowledgement latency, from the batch leaving ``send`` to its last
message acknowledged, on this process's clock (docs/operations.md tells why not one-way); the
duration of each claim round.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.drain import DEFAULT_TIMEOUT, DrainReport, Leftover, Stopwatch, group_leftovers
from fabric.errors import ConfigError, DecodeError, MessageTooLarge, PortClosed, PortTimeout
from fabric.ports.base import Port
from fabric.ports.links import Link, LinkSet
from fabric.timing import Timing
from nameservice.metrics import SIZE_BUCKETS, Buckets

log = logging.getLogger(__name__)

YIELD_EVERY = 0.02  # seconds a caller sending without pause may hold the event loop


class _Round:
    """A claim round after the loss of ``lost``: resend ``orphans`` once it is over."""

    __slots__ = ("number", "lost", "orphans", "asked", "answers", "unanswered", "deadline",
                 "started")

    def __init__(self, number: int, lost: str, orphans: list[int], deadline: float,
                 started: float) -> None:
        self.number = number
        self.lost = lost
        self.orphans = orphans
        self.asked: dict[Link, int] = {}  # intermediary asked -> its socket generation then
        self.answers = 0
        self.unanswered = False
        self.deadline = deadline
        self.started = started


class _Sent:
    """One batch held until acknowledged."""

    __slots__ = ("first_seq", "count", "frame", "size", "acked", "via", "claimed_by", "sends",
                 "sent_at")

    def __init__(self, first_seq: int, count: int, frame: bytes, size: int,
                 sent_at: float) -> None:
        self.first_seq = first_seq
        self.count = count
        self.frame = frame
        self.size = size  # payload bytes, counted against window_bytes
        self.acked = 0
        self.via: Link | None = None
        self.claimed_by: bytes | None = None
        self.sends = 0
        self.sent_at = sent_at  # time.monotonic(), when histograms are kept


@dataclass(slots=True)
class OutputStats:
    """Counters of an output port."""

    messages_sent: int = 0
    batches_sent: int = 0
    batches_resent: int = 0  # sent again after an intermediary was lost or refused them
    messages_acked: int = 0
    stale_acks: int = 0
    bad_frames: int = 0
    intermediaries_lost: int = 0
    claim_rounds: int = 0
    claim_rounds_timed_out: int = 0  # resent without every intermediary's answer


class OutputHistograms:
    """Histograms of an output port, observed per batch (see module docstring)."""

    __slots__ = ("batch_messages", "ack_latency", "claim_round")

    def __init__(self) -> None:
        self.batch_messages = Buckets(SIZE_BUCKETS)
        self.ack_latency = Buckets()
        self.claim_round = Buckets()


class OutputPort(Port):
    """Send messages on ``channel`` through every intermediary in ``endpoints``.

    Use as ``async with OutputPort(...) as port: await port.send(payload)``: leaving the block
    normally drains the port (waits, at most ``drain_timeout`` seconds, until everything sent
    is acknowledged; ``port.drain_report`` says what was left); leaving it with an exception
    closes the port at once. Payloads are anything msgpack can encode, or raw bytes (delivered
    as bytes).
    """

    kind = "producer"

    def __init__(self, channel: str, endpoints: list[str] | tuple[str, ...] = (), *,
                 window: int = 50_000, batch_max: int = 1024, batch_bytes: int = 256 * 1024,
                 window_bytes: int = 64 * 1024 * 1024, linger: float = 0.001,
                 timing: Timing = Timing(), producer_id: bytes | None = None,
                 first_seq: int = 0, drain_timeout: float = DEFAULT_TIMEOUT,
                 ctx: zmq.asyncio.Context | None = None) -> None:
        if (window < 1 or window_bytes < 1 or batch_max < 1 or first_seq < 0
                or not 0 < batch_bytes <= p.MAX_FRAME - p.BATCH_HEADER_SIZE):
            raise ConfigError("window, batch_max and batch_bytes must be positive "
                              f"(batch_bytes at most {p.MAX_FRAME - p.BATCH_HEADER_SIZE}), "
                              "first_seq not negative")
        self.producer_id = producer_id or os.urandom(p.ID_SIZE)
        self.window = window
        self.window_bytes = window_bytes
        self.batch_max = batch_max
        self.batch_bytes = batch_bytes
        self.linger = linger
        self.timing = timing
        self.stats = OutputStats()
        self.histograms: OutputHistograms | None = None
        self._hello = p.encode(p.Hello(p.ROLE_PRODUCER, self.producer_id, 0, channel))
        super().__init__(channel, endpoints, LinkSet(
            ctx, b"P" + self.producer_id, timing, self._hello, on_frame=self._on_frame,
            on_down=self._on_link_down, on_up=self._on_link_up), drain_timeout)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._parts: list[Any] = []
        self._part_bytes = 0
        self._next_seq = first_seq
        self._unacked = 0  # messages in batches held, plus the open batch
        self._held_bytes = 0  # payload bytes of the same
        self._store: dict[int, _Sent] = {}
        self._order: deque[int] = deque()  # first_seq of held batches, in send order
        self._resend: dict[int, float] = {}  # first_seq -> when to resend it
        self._rounds: dict[int, _Round] = {}  # open claim rounds by number
        self._next_round = 0
        self._flush_scheduled = False
        self._flushed_this_turn = False  # a batch went out in this turn of the event loop
        self._last_flush = 0.0
        self._last_yield = 0.0
        self._space = asyncio.Event()
        self._space.set()
        self._drained = asyncio.Event()
        self._drained.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._tick_loop()]

    async def close(self) -> None:
        """Close the sockets at once; messages not yet acknowledged are abandoned.

        Call :meth:`flush` or :meth:`drain` first to wait until everything sent is
        acknowledged (leaving ``async with`` normally drains).
        """
        await super().close()
        self._space.set()
        self._drained.set()

    def remove_endpoint(self, endpoint: str) -> None:
        """Stop using an intermediary.

        A live one gets no new batches, and the connection stays open until what went through
        it is acknowledged (no resend, so no duplicate); if it is lost meanwhile, or was not up,
        its unacknowledged batches are resent through the others as after any loss.
        """
        link = self._links.retire(endpoint)
        if link is None:
            return
        if not link.up:
            self._links.drop(link)
            self._orphan(link)
        else:
            self._drop_retired()

    async def drain(self, timeout: float = DEFAULT_TIMEOUT) -> DrainReport:
        """Stop taking sends, wait until every message is acknowledged, then close.

        From now on :meth:`send` raises :class:`PortClosed`. Returns a report; if ``timeout``
        passes first, the report lists what was not acknowledged and where it was, and the
        port is closed anyway (those messages may or may not have been delivered).
        """
        watch = Stopwatch()
        self._draining = True
        self._space.set()  # senders waiting for space get PortClosed
        self._flush()
        complete = True
        if not self._closed:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except asyncio.TimeoutError:
                complete = False
        left = () if complete else self._leftovers()
        report = DrainReport("producer", self.producer_id.hex(), complete, watch.elapsed(), left)
        report.log(log)
        await self.close()
        return report

    def _leftovers(self) -> tuple[Leftover, ...]:
        """What this port still holds, grouped by where it is."""
        pid = self.producer_id.hex()
        fate = "unacknowledged when the producer closed: delivered or not, nobody resends them"
        unsent = "not sent (no intermediary could take it)"
        batches = []
        for sent in self._store.values():
            if sent.via is not None:
                where = f"in flight through intermediary {sent.via.endpoint}"
            elif sent.claimed_by is not None:
                where = f"held by consumer {sent.claimed_by.hex()}"
            elif any(sent.first_seq in rnd.orphans for rnd in self._rounds.values()):
                where = "waiting for consumers' claims after an intermediary was lost"
            else:
                where = unsent
            batches.append((pid, where, fate, sent.count - sent.acked))
        if self._parts:
            batches.append((pid, unsent, fate, len(self._parts)))
        return group_leftovers(batches)

    def status(self) -> dict:
        """A JSON-able summary for the control socket."""
        return {"kind": "producer", "id": self.producer_id.hex(), "channel": self.channel,
                "endpoints": self.endpoints, "unacked": self._unacked,
                "draining": self._draining, "counters": dataclasses.asdict(self.stats)}

    @property
    def unacked(self) -> int:
        """Messages sent (or batched) and not yet acknowledged."""
        return self._unacked

    @property
    def next_seq(self) -> int:
        """The sequence number the next message sent gets."""
        return self._next_seq + len(self._parts)

    @property
    def acked_below(self) -> int:
        """Every message numbered below this is acknowledged."""
        return self._acked_below()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, payload: Any, key: Any = None) -> None:
        """Queue one message; waits while the window of unacknowledged messages is full.
        (``key`` routes a message among a channel's partitions, see ``PartitionedOutput``; a
        channel of one partition has nothing to route.)"""
        if (self._unacked >= self.window or self._held_bytes >= self.window_bytes
                or self._closed or self._draining):
            await self._wait_for_space()
        self._add(payload)
        if not self._parts:  # it filled the batch, which went out
            # A caller that never waits would starve acks and heartbeats: yield now and then.
            now = time.monotonic()
            if now - self._last_yield > YIELD_EVERY:
                self._last_yield = now
                await asyncio.sleep(0)
        elif not self._flush_scheduled:
            loop = asyncio.get_running_loop()
            if (loop.time() - self._last_flush > self.linger or not self._flushed_this_turn
                    and self._unacked - len(self._parts) < self.batch_max):
                self._flush()  # idle or lightly loaded: nothing worth waiting for, send at once
            else:
                self._flush_scheduled = True  # busy: gather what this turn of the loop sends
                loop.call_soon(self._flush)

    async def send_batch(self, payloads: list[Any]) -> None:
        """Send ``payloads`` as batches of their own, cut exactly as ``send`` cuts them from an
        empty batch (the batch open now goes out first). The same payloads sent again from the
        same sequence number make the same batches, which consumers recognise as copies: so
        this waits for window space for all of them before it sends any (a list longer than
        the window waits until nothing is unacknowledged)."""
        self._flush()
        await self._wait_for_space(min(len(payloads), self.window))
        for payload in payloads:
            self._add(payload)
        self._flush()

    def _add(self, payload: Any) -> None:
        """Batch one payload, cutting the batch by count and bytes (no flush timing)."""
        kind = type(payload)
        if kind is bytes or kind is str and payload.isascii():
            size = len(payload) + 5  # at most 5 bytes of msgpack header below 4 GiB
        else:
            size = len(self._packer.pack(payload))
        if self._part_bytes + size > self.batch_bytes:
            if size > self.batch_bytes:
                raise MessageTooLarge(f"payload of {size} bytes exceeds {self.batch_bytes}")
            self._flush()
        self._parts.append(payload)
        self._part_bytes += size
        self._held_bytes += size
        self._unacked += 1
        if self._unacked == 1:
            self._drained.clear()
        if len(self._parts) >= self.batch_max:
            self._flush()

    async def _wait_for_space(self, need: int = 1) -> None:
        """Wait until ``need`` more messages fit the window (PortClosed if the port closes or
        drains meanwhile)."""
        while True:
            if self._closed:
                raise PortClosed("send on a closed port")
            if self._draining:
                raise PortClosed("send on a draining port: it takes no new messages")
            if self._unacked + need <= self.window and self._held_bytes < self.window_bytes:
                return
            self._space.clear()
            await self._space.wait()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent so far is acknowledged by a consumer; raise
        :class:`PortTimeout` (a ``TimeoutError``) if ``timeout`` seconds pass first."""
        self._flush()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except asyncio.TimeoutError:
            raise PortTimeout(f"{self._unacked} messages still unacknowledged after "
                              f"{timeout:g} s") from None

    def _flush(self) -> None:
        self._flush_scheduled = False
        parts = self._parts
        if not parts or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._last_flush = loop.time()
        if not self._flushed_this_turn:
            self._flushed_this_turn = True
            loop.call_soon(self._turn_over)
        count = len(parts)
        size = self._part_bytes
        self._parts = []
        self._part_bytes = 0
        seq = self._next_seq
        acked_below = self._acked_below()  # before this batch counts: it is not acknowledged
        self._next_seq += count
        body = self._packer.pack(parts)  # one C call for the whole batch
        frame = p.batch_frame(self.producer_id, seq, count, acked_below, body)
        histograms = self.histograms
        if histograms is not None:
            histograms.batch_messages.observe(count)
        sent = _Sent(seq, count, frame, size, 0.0 if histograms is None else time.monotonic())
        self._store[seq] = sent
        self._order.append(seq)
        self.stats.messages_sent += count
        self._dispatch(sent)

    def _turn_over(self) -> None:
        self._flushed_this_turn = False

    def _acked_below(self) -> int:
        order, store = self._order, self._store
        while order and order[0] not in store:
            order.popleft()
        return order[0] if order else self._next_seq

    def _dispatch(self, sent: _Sent) -> None:
        """Send a held batch through the least loaded live intermediary, or retry later."""
        for link in self._links.by_load():
            if link.send(sent.frame):
                sent.via = link
                link.load += sent.count - sent.acked
                if sent.sends:
                    self.stats.batches_resent += 1
                else:
                    self.stats.batches_sent += 1
                sent.sends += 1
                return
        self._resend[sent.first_seq] = 0.0  # no intermediary can take it now: retry each tick

    # -- receiving ----------------------------------------------------------------------------

    def _on_frame(self, link: Link, frame: bytes) -> None:
        try:
            kind = p.frame_type(frame)
            if kind == p.T_ACK:
                self._on_ack(frame)
            elif kind == p.T_HEARTBEAT:
                if len(frame) != 2:
                    raise DecodeError("HEARTBEAT with a body")
            elif kind == p.T_NACK:
                self._on_nack(link, p.decode(frame))
            elif kind == p.T_PEER_GONE:
                self._on_peer_gone(p.decode(frame))
            elif kind == p.T_WHO:
                p.decode(frame)
                self._links.greet_again(link)
            elif kind == p.T_DRAIN:
                p.decode(frame)
                self._on_drain(link)
            elif kind == p.T_CLAIMED:
                self._on_claimed(link, p.decode(frame))
            else:
                raise DecodeError(f"frame type {kind} is not sent to a producer")
        except DecodeError as exc:
            self.stats.bad_frames += 1
            log.debug("dropped a bad frame: %s", exc)

    def _on_ack(self, frame: bytes) -> None:
        pid, _, _ = p.ack_header(frame)
        if pid != self.producer_id:
            raise DecodeError("ACK for another producer")
        hold = frame[2] & p.ACK_HOLD
        store = self._store
        freed = 0
        histograms = self.histograms
        for seq, handled in p.ack_entries(frame):
            sent = store.get(seq)
            if sent is None or handled > sent.count:
                self.stats.stale_acks += 1
                continue
            if handled > sent.acked:
                delta = handled - sent.acked
                sent.acked = handled
                freed += delta
                if sent.via is not None:
                    sent.via.load -= delta
            if sent.acked >= sent.count:
                del store[seq]
                self._held_bytes -= sent.size
                self._resend.pop(seq, None)
                if histograms is not None and sent.sent_at:  # (sent before they were kept: 0)
                    histograms.ack_latency.observe(time.monotonic() - sent.sent_at)
            elif hold:
                # A consumer still holds the rest; it will acknowledge it through a survivor.
                sent.claimed_by = frame[20:36]
                self._resend.pop(seq, None)
                if sent.via is not None:
                    sent.via.load -= sent.count - sent.acked
                    sent.via = None
        if freed:
            self._release(freed)

    def _release(self, freed: int) -> None:
        self._unacked -= freed
        self.stats.messages_acked += freed
        if self._unacked < self.window and self._held_bytes < self.window_bytes:
            self._space.set()
        if self._unacked == 0:
            self._drained.set()

    def _on_nack(self, link: Link, nack: p.Frame) -> None:
        assert isinstance(nack, p.Nack)
        for seq in nack.first_seqs:
            sent = self._store.get(seq)
            if sent is None or sent.via is not link:
                self.stats.stale_acks += 1
                continue
            link.load -= sent.count - sent.acked
            sent.via = None
            # Later, not now: with one intermediary it would be refused again at once.
            self._resend[seq] = asyncio.get_running_loop().time() + self.timing.heartbeat

    def _on_peer_gone(self, gone: p.Frame) -> None:
        assert isinstance(gone, p.PeerGone)
        for sent in list(self._store.values()):
            if sent.claimed_by == gone.consumer_id:
                sent.claimed_by = None
                sent.frame = p.mark_redelivered(sent.frame, sent.acked)
                self._dispatch(sent)

    def _on_drain(self, link: Link) -> None:
        """The intermediary drains: send it nothing new; it delivers what it holds."""
        if not link.draining:
            log.info("intermediary %s is draining: no new batches go through it", link.endpoint)
        link.draining = True
        link.send_now(p.drain_frame())  # answer: nothing more follows from this producer

    def _drop_retired(self) -> None:
        """Close retiring links once nothing sent through them waits for an acknowledgement."""
        for link in self._links.retiring():
            if (link.load <= 0 and not any(s.via is link for s in self._store.values())
                    and not any(link in rnd.asked for rnd in self._rounds.values())):
                # (A claim round it was asked waits for its answer.) GOODBYE: it forgets us now.
                self._links.drop(link, p.goodbye_frame())

    # -- failover -----------------------------------------------------------------------------

    def _on_link_up(self, link: Link) -> None:
        for rnd in list(self._rounds.values()):
            if rnd.asked.get(link) != link.gen:
                self._ask(rnd, link)
        self._retry_now()

    def _on_link_down(self, link: Link, silence: float) -> None:
        self.stats.intermediaries_lost += 1
        for rnd in list(self._rounds.values()):
            if rnd.asked.pop(link, None) is not None:
                self._check_round(rnd)
        self._orphan(link)

    def _orphan(self, link: Link) -> None:
        """Start a claim round for every batch held by a lost intermediary."""
        orphans = []
        for sent in self._store.values():
            if sent.via is link:
                sent.via = None
                orphans.append(sent.first_seq)
        link.load = 0
        if not orphans:
            return
        loop = asyncio.get_running_loop()
        # Long enough for an intermediary to declare a silent consumer gone and answer.
        deadline = loop.time() + self.timing.consumer_timeout + 2 * self.timing.timeout
        rnd = _Round(self._next_round, link.endpoint, orphans, deadline, loop.time())
        self._next_round = (self._next_round + 1) & p.U32
        self._rounds[rnd.number] = rnd
        self.stats.claim_rounds += 1
        for other in self._links.all() + self._links.retiring():
            if other.up and other is not link:
                self._ask(rnd, other)

    def _ask(self, rnd: _Round, link: Link) -> None:
        claim = p.encode(p.Claim(rnd.number, self.producer_id, rnd.lost))
        if link.send(claim):
            rnd.asked[link] = link.gen

    def _on_claimed(self, link: Link, claimed: p.Frame) -> None:
        assert isinstance(claimed, p.Claimed)
        rnd = self._rounds.get(claimed.round)
        if (claimed.producer_id != self.producer_id or rnd is None
                or rnd.asked.get(link) != link.gen):
            self.stats.stale_acks += 1
            return
        del rnd.asked[link]
        rnd.answers += 1
        rnd.unanswered |= claimed.unanswered
        self._check_round(rnd)

    def _check_round(self, rnd: _Round, now: float | None = None) -> None:
        """Resend the round's unclaimed batches once every intermediary asked has answered
        (at least one did; with none up, it waits for one), or at its deadline."""
        timed_out = now is not None and now >= rnd.deadline
        if not timed_out and (rnd.asked or not rnd.answers):
            return
        del self._rounds[rnd.number]
        if self.histograms is not None:
            now = asyncio.get_running_loop().time() if now is None else now
            self.histograms.claim_round.observe(now - rnd.started)
        if timed_out:
            self.stats.claim_rounds_timed_out += 1
            log.warning("claim round after losing %s timed out: resending its batches flagged",
                        rnd.lost)
        flag = timed_out or rnd.unanswered  # a consumer may have handled some of them
        for seq in rnd.orphans:
            sent = self._store.get(seq)
            if sent is None or sent.via is not None or sent.claimed_by is not None:
                continue
            if flag:
                sent.frame = p.mark_redelivered(sent.frame, sent.acked)
            self._dispatch(sent)

    def _retry_now(self, now: float | None = None) -> None:
        if not self._resend:
            return
        now = asyncio.get_running_loop().time() if now is None else now
        for seq, due in list(self._resend.items()):
            if due > now:
                continue
            del self._resend[seq]
            sent = self._store.get(seq)
            if sent is not None and sent.via is None and sent.claimed_by is None:
                self._dispatch(sent)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.timing.tick)
            now = loop.time()
            self._links.tick(now)
            self._retry_now(now)
            for rnd in list(self._rounds.values()):
                self._check_round(rnd, now)
            if self._links.retiring():
                self._drop_retired()
