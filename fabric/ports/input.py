"""InputPort: the consumer side of a channel.

A port connects one DEALER socket to every intermediary of its channel and grants each of them
``prefetch`` messages of credit. Batches received are queued and their messages handed, one at a
time and in batch order, to the handler. By default a message is acknowledged when the handler
returns (``auto_ack``); with ``auto_ack=False`` the handler calls ``message.ack()`` itself.
Acknowledgements are cumulative per batch ("the first N messages of batch S are handled"), are
grouped per producer into one ACK frame, and carry the credit given back to the intermediary.

Duplicates: the port remembers, per producer, the batches it received (``ProducerWindow``);
a copy of a known batch is dropped, and the messages of it that were already handled are
acknowledged again. A producer tells in each batch below which sequence number everything is
acknowledged, and the port forgets those batches; at most ``max_tracked`` batches per producer
are remembered (the oldest are forgotten first, counted in ``stats.window_evictions``).

When an intermediary is lost, the port sends through a survivor, for every batch that came
through it, an ACK with the HOLD flag: what is handled is acknowledged and the rest is claimed,
so the producer does not resend it (which could hand it to another consumer, a duplicate).
A producer that lost an intermediary also asks (CLAIM, through each survivor) before it resends
anything: the port answers once it has itself seen that intermediary go (or a heartbeat timeout
later), with its claims for that producer's batches that came through it, then CLAIMED, all on
the connection the question came from, so the answer cannot overtake the claims.

Draining: ``drain()`` sends DRAIN to every intermediary (route nothing more here), handles and
acknowledges everything already received, and closes once each intermediary has answered DRAIN
(it answers only when all it sent this consumer is acknowledged, and frames on one connection
arrive in order, so the answer also proves the last acknowledgements arrived). A second round
of DRAIN confirms that nothing arrived meanwhile. ``remove_endpoint`` on a live intermediary
does the same for that one link. Closing with nothing left unhandled sends GOODBYE on every
live link: the intermediaries forget the consumer at once.

Memory: at most ``prefetch`` (plus one batch) messages per intermediary wait in the port.
Delivery yields to the event loop between handler calls once their time adds up (``YIELD_EVERY``;
after every call once a handler proves slow), so heartbeats keep flowing; but one call that
blocks for longer than the consumer timeout (2 s) gets the consumer declared dead (use ``async
def`` handlers, or run long blocking work in an executor).
Exceptions raised by a handler are logged and counted; the message counts as handled.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.drain import DEFAULT_TIMEOUT, DrainReport, Leftover, Stopwatch, group_leftovers
from fabric.errors import ConfigError, DecodeError
from fabric.ports.acks import AckOutbox
from fabric.ports.base import Port
from fabric.ports.claim_answers import ClaimAnswers
from fabric.ports.links import Link, LinkSet
from fabric.ports.received import (
    BatchHandler,
    DeliveredBatch,
    Handler,
    Message,
    ProducerWindow,
    ReceivedBatch,
)
from fabric.timing import Timing

log = logging.getLogger(__name__)

ACK_FLUSH_ENTRIES = 64
YIELD_EVERY = 0.02  # seconds of handler work after which delivery yields to the event loop
INLINE_MAX = 16  # batches this small are delivered as they arrive when the port is idle
MAX_PRODUCERS = 10_000


def _batches_only(message: Message) -> None:
    raise AssertionError("a port with a batch handler delivers batches, not messages")


@dataclass(slots=True)
class InputStats:
    """Counters of an input port."""

    messages_delivered: int = 0
    batches_received: int = 0
    duplicate_batches: int = 0
    stale_batches: int = 0  # of duplicate_batches: wholly acknowledged at the producer already
    redelivered_messages: int = 0
    handler_errors: int = 0
    bad_frames: int = 0
    window_evictions: int = 0
    intermediaries_lost: int = 0
    claims_answered: int = 0
    claims_unknown: int = 0  # CLAIMs about an endpoint this port does not use (named otherwise?)


class InputPort(Port):
    """Receive messages of ``channel`` from every intermediary in ``endpoints``.

    ``handler(message)`` may be a plain or an ``async`` function. Use as
    ``async with InputPort(channel, endpoints, handler): ...``: leaving the block normally
    drains the port (everything received is handled and acknowledged, at most
    ``drain_timeout`` seconds; ``port.drain_report`` says what was left); leaving it with an
    exception closes the port at once.
    """

    kind = "consumer"

    def __init__(self, channel: str, endpoints: list[str] | tuple[str, ...] = (),
                 handler: Handler | None = None, *, auto_ack: bool = True,
                 prefetch: int = 8192, max_tracked: int = 65_536, timing: Timing = Timing(),
                 consumer_id: bytes | None = None, drain_timeout: float = DEFAULT_TIMEOUT,
                 ctx: zmq.asyncio.Context | None = None,
                 batch_handler: BatchHandler | None = None) -> None:
        if (handler is None) == (batch_handler is None):
            raise ConfigError("an InputPort needs a handler or a batch handler (not both)")
        if batch_handler is not None and (auto_ack or inspect.iscoroutinefunction(
                batch_handler)):
            raise ConfigError("a batch handler is a plain function, with auto_ack=False")
        if prefetch < 1 or max_tracked < 1:
            raise ConfigError("prefetch and max_tracked must be positive")
        self.consumer_id = consumer_id or os.urandom(p.ID_SIZE)
        self.auto_ack = auto_ack
        self.prefetch = prefetch
        self.max_tracked = max_tracked
        self._credit_flush = max(1, prefetch // 4)
        self.timing = timing
        self.stats = InputStats()
        self._handler: Handler = handler if handler is not None else _batches_only
        self._batch_handler = batch_handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self._plain = auto_ack and not self._is_async  # the fast path
        self._delivering = False
        hello = p.encode(p.Hello(p.ROLE_CONSUMER, self.consumer_id, prefetch, channel))
        super().__init__(channel, endpoints, LinkSet(
            ctx, b"C" + self.consumer_id, timing, hello, on_frame=self._on_frame,
            on_down=self._on_link_down, on_up=self._on_link_up), drain_timeout)
        self._producers: OrderedDict[bytes, ProducerWindow] = OrderedDict()
        self._queue: deque[tuple[ReceivedBatch, list[Any]]] = deque()
        self._wake = asyncio.Event()
        self._outbox = AckOutbox(self.consumer_id, self._links, prefetch, self._carried_by)
        self._acking_many = False  # ack_batches runs: one flush at its end, not one per ack
        self._claims = ClaimAnswers(self.consumer_id, timing.timeout, self._links.find,
                                    self._held_through)

    # -- lifecycle ----------------------------------------------------------------------------

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._deliver_loop(), self._tick_loop()]

    async def close(self) -> None:
        """Send pending acknowledgements and close the sockets at once.

        Messages received and not yet handled are abandoned; the intermediaries redeliver them to
        another consumer once this one is declared dead (leaving ``async with`` normally
        drains instead).
        """
        if not self._closed:
            self._flush_acks()
        await super().close()

    def remove_endpoint(self, endpoint: str) -> None:
        """Stop receiving from an intermediary.

        A live one is told (DRAIN) to route nothing more here; the connection stays open until
        everything received through it is handled and acknowledged (it answers DRAIN then), so
        nothing is redelivered. If it is not up, or is lost meanwhile, what came through it is
        claimed through the others (ACK with HOLD), as after any loss.
        """
        link = self._links.retire(endpoint)
        if link is None:
            return
        if link.up and link.send_now(p.drain_frame()):
            link.drains_asked += 1
        else:
            self._links.drop(link)
            self._reroute(link)

    async def drain(self, timeout: float = DEFAULT_TIMEOUT) -> DrainReport:
        """Leave the channel cleanly: no new batches, everything received handled and
        acknowledged, then close. Returns a report; if ``timeout`` passes first, it lists what
        was not handled, and the intermediaries redeliver that to other consumers (flagged)."""
        watch = Stopwatch()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._draining = True
        self._ask_drain()  # at once: route nothing more here
        complete = False
        while not self._closed and loop.time() < deadline:
            if not self._quiet():
                if not self._queue and not self._delivering:
                    self._flush_acks()
                await asyncio.sleep(self.timing.tick)
                continue
            # A barrier: each intermediary answers DRAIN once everything it sent us is
            # acknowledged; frames keep their order on a connection.
            mark = self.stats.batches_received + self.stats.duplicate_batches
            asked = self._ask_drain()
            while loop.time() < deadline and not all(
                    link.gen != gen or link.drains_answered >= n
                    for link, (gen, n) in asked.items()):
                await asyncio.sleep(self.timing.tick)
            if loop.time() >= deadline:
                break
            now_up = {lk for lk in self._links.all() + self._links.retiring() if lk.up}
            if (self._quiet() and mark == self.stats.batches_received + self.stats.duplicate_batches
                    and now_up <= set(asked)
                    and all(lk.gen == asked[lk][0] for lk in now_up)):
                complete = True
                break
        left = () if complete else self._leftovers()
        report = DrainReport("consumer", self.consumer_id.hex(), complete, watch.elapsed(), left)
        report.log(log)
        await self.close()
        return report

    def _goodbye(self) -> bytes | None:
        """GOODBYE only when nothing received is left unhandled or unacknowledged: the
        intermediaries then forget this consumer at once and tell no producer it is gone. A
        consumer that abandons work says nothing: each intermediary declares it dead after the
        consumer timeout, redelivers what it sent it (flagged) and sends PEER_GONE, so that
        its producers resend what it claimed. (PEER_GONE at once could overtake the claims it
        sent through another intermediary just before: those batches would never be
        resent.)"""
        if self._outbox or self._queue or self._delivering:
            return None
        for window in self._producers.values():
            for state in window.batches.values():
                if state.handled < state.count:
                    return None
        return p.goodbye_frame()

    def _ask_drain(self) -> dict[Link, tuple[int, int]]:
        """Send DRAIN on every live link: ``{link: (socket generation, answers awaited)}``."""
        asked = {}
        for link in self._links.all() + self._links.retiring():
            if link.up and link.send_now(p.drain_frame()):
                link.drains_asked += 1
                asked[link] = (link.gen, link.drains_asked)
        return asked

    def _quiet(self) -> bool:
        """Nothing received waits for the handler, and no acknowledgement waits to be sent."""
        return not (self._queue or self._delivering or self._outbox)

    def _leftovers(self) -> tuple[Leftover, ...]:
        batches = []
        for pid, window in self._producers.items():
            for state in window.batches.values():
                if state.handled >= state.count:
                    continue
                if state.via is not None:
                    where = f"unhandled, received through intermediary {state.via.endpoint}"
                    fate = "that intermediary redelivers them to another consumer, flagged"
                else:
                    where = "unhandled and claimed after an intermediary was lost"
                    fate = "the producer resends them, flagged, once told this consumer is gone"
                batches.append((pid.hex(), where, fate, state.count - state.handled))
        return group_leftovers(batches)

    def status(self) -> dict:
        """A JSON-able summary for the control socket."""
        return {"kind": "consumer", "id": self.consumer_id.hex(), "channel": self.channel,
                "endpoints": self.endpoints, "pending_batches": len(self._queue),
                "draining": self._draining, "counters": dataclasses.asdict(self.stats)}

    @property
    def pending(self) -> int:
        """Batches received and not yet handed to the handler."""
        return len(self._queue)

    # -- receiving ----------------------------------------------------------------------------

    def _on_frame(self, link: Link, frame: bytes) -> None:
        try:
            kind = p.frame_type(frame)
            if kind == p.T_BATCH:
                self._on_batch(link, frame)
            elif kind == p.T_WHO:
                p.decode(frame)
                self._links.greet_again(link)
            elif kind == p.T_DRAIN:
                p.decode(frame)
                self._on_drain_answer(link)
            elif kind == p.T_CLAIM:
                self._on_claim(link, frame)
            elif kind != p.T_HEARTBEAT:
                raise DecodeError(f"frame type {kind} is not sent to a consumer")
            elif len(frame) != 2:
                raise DecodeError("HEARTBEAT with a body")
        except DecodeError as exc:
            self.stats.bad_frames += 1
            log.debug("dropped a bad frame from %s: %s", link.endpoint, exc)

    def _on_batch(self, link: Link, frame: bytes) -> None:
        batch = p.decode(frame)
        assert isinstance(batch, p.Batch)
        pid, seq, count = batch.producer_id, batch.first_seq, batch.count
        window = self._window(pid)
        window.prune(batch.acked_below)
        if seq + count <= window.acked_below and seq not in window.batches:
            # Wholly acknowledged at its producer (it said so in a later batch): a stale copy
            # (a cut-off or frozen intermediary's, or one requeued after a consumer's death).
            # Nobody needs it: acknowledge it (the intermediary that sent it waits for that)
            # and give the credit back.
            self.stats.duplicate_batches += 1
            self.stats.stale_batches += 1
            link.owed += count
            self._outbox.add(link, pid, seq, count)
            return
        known = window.batches.get(seq)
        if known is not None and known.count == count:
            # A copy (resent after an intermediary was lost): drop it, give the credit back,
            # and acknowledge again what is already handled.
            self.stats.duplicate_batches += 1
            link.owed += count
            known.via = link
            known.through = link.endpoint
            if known.handled:
                self._add_ack(known)
            return
        try:
            payloads = p.decode_payloads(batch.body, count)
        except DecodeError:
            # Cannot be delivered, ever: acknowledge it so nobody keeps it (counted as bad).
            link.owed += count
            self._outbox.add(link, pid, seq, count)
            raise
        self.stats.batches_received += 1
        state = ReceivedBatch(pid, seq, count, batch.skip, link, batch.redelivered,
                              self._ack_range, len(batch.body))
        link.owed += batch.skip
        batches = window.batches
        batches[seq] = state
        if len(batches) > self.max_tracked:
            batches.popitem(last=False)
            self.stats.window_evictions += 1
        if batch.skip >= count:
            self._add_ack(state)
        elif (self._plain and not self._queue and not self._delivering
              and count - batch.skip <= INLINE_MAX):
            # A small batch while idle (light load): deliver it right here, saving a task
            # switch of latency. Large batches go through the delivery task, which yields
            # between batches so heartbeats keep flowing.
            self._deliver_plain(state, payloads)
            self._flush_acks()
        else:
            self._queue.append((state, payloads))
            self._wake.set()

    def _window(self, pid: bytes) -> ProducerWindow:
        producers = self._producers
        window = producers.get(pid)
        if window is None:
            window = producers[pid] = ProducerWindow()
            if len(producers) > MAX_PRODUCERS:
                producers.popitem(last=False)
                self.stats.window_evictions += 1
        return window

    # -- delivering ---------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        queue = self._queue
        handler = self._handler
        stats = self.stats
        plain = self._plain
        clock = time.monotonic
        while True:
            if not queue:
                self._flush_acks()
                self._wake.clear()
                await self._wake.wait()
                continue
            state, payloads = queue[0]
            budget_end = clock() + YIELD_EVERY
            if self._batch_handler is not None:
                queue.popleft()
                self._deliver_batch(state, payloads)
            elif plain:
                if self._deliver_plain(state, payloads, budget_end):
                    queue.popleft()
            else:
                queue.popleft()
                start = state.handled
                auto = self.auto_ack
                self._delivering = True
                try:
                    for i in range(start, state.count):
                        msg = Message(payloads[i], state, i)
                        try:
                            if self._is_async:
                                await cast(Awaitable[None], handler(msg))
                            else:
                                handler(msg)
                        except Exception:  # a handler bug must not stop delivery
                            stats.handler_errors += 1
                            log.exception("handler failed on %r", msg)
                        if auto and state.handled == i:
                            state.handled = i + 1
                        if clock() > budget_end:
                            await asyncio.sleep(0)  # let heartbeats and acks through
                            budget_end = clock() + YIELD_EVERY
                finally:
                    self._delivering = False
                self._delivered(state, state.count - start)
            await asyncio.sleep(0)  # let acks, heartbeats and new batches through

    def _deliver_batch(self, state: ReceivedBatch, payloads: list[Any]) -> None:
        """Hand what is left of a batch to the batch handler, in one call."""
        start = state.handled
        assert self._batch_handler is not None
        try:
            self._batch_handler(DeliveredBatch(state, start, payloads[start:]))
        except Exception:  # a handler bug must not stop delivery
            self.stats.handler_errors += 1
            log.exception("batch handler failed on a batch of %d messages", state.count - start)
        self._delivered(state, state.count - start)

    def _deliver_plain(self, state: ReceivedBatch, payloads: list[Any],
                       budget_end: float = float("inf")) -> bool:
        """The hot path: a plain function, acknowledged when it returns. Delivers until the
        batch is done (True) or ``budget_end`` passes (False: the caller yields, then resumes).
        Nothing else runs meanwhile (no await), so progress is recorded once, at the end."""
        handler = self._handler
        start = i = state.handled
        count = state.count
        clock = time.monotonic
        step = 16  # messages between looks at the clock; 1 once a handler proves slow
        while i < count:
            stop = min(count, i + step)
            began = clock()
            try:
                for i in range(i, stop):  # noqa: B020 - i names the failing message below
                    handler(Message(payloads[i], state, i))
                i = stop
            except Exception:  # a handler bug must not stop delivery
                self.stats.handler_errors += 1
                log.exception("handler failed on message %d of a batch", i)
                i += 1
            now = clock()
            if now - began > YIELD_EVERY / 2:
                step = 1
            if i < count and now > budget_end:
                break
        state.handled = i
        self._delivered(state, i - start)
        return i >= count

    def _delivered(self, state: ReceivedBatch, delivered: int) -> None:
        stats = self.stats
        stats.messages_delivered += delivered
        if state.redelivered:
            stats.redelivered_messages += delivered
        if self.auto_ack:
            self._credit_and_ack(state, delivered)
        if self._outbox.entries >= ACK_FLUSH_ENTRIES:
            self._flush_acks()

    def _credit_and_ack(self, state: ReceivedBatch, handled: int) -> None:
        charged = state.charged
        self._add_ack(state)
        if charged.epoch == state.charged_epoch:
            charged.owed += handled
            if charged.owed >= self._credit_flush:
                # Give credit back early: waiting for an empty queue would drain the pipeline.
                self._flush_acks()

    def _ack_range(self, state: ReceivedBatch, start: int, end: int) -> None:
        """Acknowledge messages ``start .. end-1`` of a batch (``ack()`` of a message or of a
        delivered batch, with ``auto_ack=False``)."""
        if self._closed or end <= state.handled:
            return
        if start > state.handled:  # acknowledged ahead of earlier ones: noted for later
            if state.done is None:
                state.done = set()
            state.done.update(range(start, end))
            return
        before = state.handled
        state.handled = end
        done = state.done
        if done:
            done.difference_update(range(before, end))
            while state.handled in done:
                done.discard(state.handled)
                state.handled += 1
        self._credit_and_ack(state, state.handled - before)
        if self._outbox.entries >= ACK_FLUSH_ENTRIES or not self._queue \
                and not self._acking_many:
            self._flush_acks()

    def ack_batches(self, batches: Iterable[DeliveredBatch | Message]) -> None:
        """Acknowledge many delivered batches (or messages, ``auto_ack=False``) at once: what
        ``ack()`` does for each, sent as one ACK frame per intermediary and producer instead of
        a frame per call."""
        self._acking_many = True
        try:
            for batch in batches:
                batch.ack()
        finally:
            self._acking_many = False
        if self._outbox.entries:
            self._flush_acks()

    # -- acknowledging ------------------------------------------------------------------------

    def _add_ack(self, state: ReceivedBatch) -> None:
        self._outbox.add(state.via, state.producer_id, state.first_seq, state.handled)

    def _flush_acks(self) -> None:
        """Send every pending acknowledgement and the credit owed to each intermediary."""
        self._outbox.flush()

    def _carried_by(self, link: Link, pid: bytes, entries: dict[int, int]) -> None:
        """Batches no intermediary carries any more (claimed after a loss) are acknowledged
        through ``link``: if it is lost before forwarding the ACK, :meth:`_reroute` must send
        it again, since no claim round covers a claimed batch. The complete ones only: a
        partial acknowledgement lost is repeated by the complete one."""
        window = self._producers.get(pid)
        if window is None:
            return
        for seq, handled in entries.items():
            state = window.batches.get(seq)
            if state is not None and state.via is None and handled >= state.count:
                state.via = link

    def _on_drain_answer(self, link: Link) -> None:
        """The intermediary answered our DRAIN: all it sent us is acknowledged."""
        if link.drains_answered >= link.drains_asked:
            raise DecodeError("DRAIN that answers nothing")
        link.drains_answered += 1
        if link.retiring and link.drains_answered >= link.drains_asked:
            # Removed and done. A claim round it forwarded still gets its answer before the
            # connection closes (or that intermediary would wait for our death to end it).
            self._claims.answer_now(link)
            self._answer_claims()
            # Acknowledgements of later copies go through the others.
            for window in self._producers.values():
                for state in window.batches.values():
                    if state.via is link:
                        state.via = None
            # All it sent us is handled and acknowledged: GOODBYE, it forgets us at once.
            self._links.drop(link, p.goodbye_frame())

    # -- failover -----------------------------------------------------------------------------

    def _on_link_up(self, link: Link) -> None:
        link.owed = 0  # the HELLO granted full credit afresh
        self._outbox.send_holds()

    def _on_link_down(self, link: Link, silence: float) -> None:
        self.stats.intermediaries_lost += 1
        self._reroute(link)
        self._answer_claims()

    def _reroute(self, link: Link) -> None:
        """Claim, through the survivors, every batch that came through a lost intermediary."""
        self._flush_acks()
        for pid, window in self._producers.items():
            for state in window.batches.values():
                if state.via is link:
                    state.via = None
                    self._outbox.hold(pid, state.first_seq, state.handled)
        self._outbox.send_holds()

    def _on_claim(self, link: Link, frame: bytes) -> None:
        """A producer lost an intermediary and asks what we hold of what came through it."""
        claim = p.decode(frame)
        assert isinstance(claim, p.Claim)
        if not self._claims.add(claim, link, asyncio.get_running_loop().time()):
            # Nothing came through it here, unless the producers name it differently (they must
            # use the same endpoint string): counted, so that an operator can tell.
            self.stats.claims_unknown += 1
        self._answer_claims()

    def _answer_claims(self) -> None:
        if self._claims:
            self.stats.claims_answered += self._claims.answer(asyncio.get_running_loop().time())

    def _held_through(self, producer_id: bytes, endpoint: str) -> list[tuple[int, int]]:
        """``(first_seq, handled)`` of the producer's batches received through ``endpoint``."""
        window = self._producers.get(producer_id)
        return [] if window is None else [(state.first_seq, state.handled)
                                          for state in window.batches.values()
                                          if state.through == endpoint]

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.timing.tick)
            self._links.tick(loop.time())
            self._outbox.send_holds()
            self._answer_claims()
            if not self._queue:
                self._flush_acks()
