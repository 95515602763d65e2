"""The intermediary: forwards producer batches to consumers by credit and routes acks back.

One ROUTER socket serves a channel; producers and consumers connect to it with DEALER sockets
whose routing ids are ``b"P" + producer_id`` and ``b"C" + consumer_id``. The intermediary reads
only frame headers, never payloads.

State it keeps, none of which matters for correctness (producers hold every message until a
consumer acknowledges it end to end):

- per consumer: its credit (messages it is ready to take) and the batches sent to it and not yet
  fully acknowledged, so that if it dies they go to another consumer, flagged redelivered;
- a queue of batches waiting for credit, bounded by ``max_queue_bytes``: a batch that would
  overflow it is refused with a NACK and the producer sends it elsewhere.

Rules (docs/datapath.md tells why, docs/protocol.md frame by frame):
- a HELLO on a new connection starts a peer afresh: a producer's queued and parked batches are
  dropped (it resends what it sent on the old connection), a consumer's in-flight batches are
  sent back to it, flagged (no other consumer could recognise a copy); a HELLO with AGAIN (the
  answer to WHO) keeps everything;
- a silent consumer is dead: its batches are redelivered, flagged, and every producer is told
  (PEER_GONE); a silent producer's record is kept (bounded) and its batches are parked
  (:mod:`fabric.intermediary.batchqueue`) until it says HELLO again: a stranger meanwhile
  (WHO, NACK);
- a producer that lost another intermediary sends CLAIM: forwarded to every consumer, answered
  once all have answered or left (:mod:`fabric.intermediary.claims`);
- draining: DRAIN to every producer, forward and route acks until nothing is held, then stop;
  a consumer's DRAIN stops routing to it and is answered once all sent to it is acknowledged;
- a peer's GOODBYE (its last frame) forgets it at once: counted as left, not expired;
- after a freeze long enough for its peers to give up on it, it rebinds its socket (every peer
  starts afresh, nothing stale is delivered).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import zmq

from fabric import protocol as p
from fabric.drain import DEFAULT_TIMEOUT, DrainReport, Leftover
from fabric.errors import DecodeError
from fabric.intermediary.admission import Admission
from fabric.intermediary.batchqueue import BatchQueue
from fabric.intermediary.claims import Answer, ClaimRounds
from fabric.intermediary.peers import (
    CONSUMER_PREFIX,
    PRODUCER_PREFIX,
    IntermediaryStats,
    Peer,
    drain_leftovers,
    peers_summary,
)
from fabric.intermediary.router import REBIND_PATIENCE, bind_router
from fabric.intermediary.stall import OffCpuClock
from fabric.timing import Timing
from nameservice.control import ControlSocket
from nameservice.security.context import current as security

log = logging.getLogger(__name__)

MAX_DEAD_PRODUCERS = 10_000  # records of silent producers kept in case they come back
DRAIN_LINGER_MS = 1000  # after a drain, time given to the last acks to leave the socket
READ_CHECK_EVERY = 256  # frames handled between looks at the clock while reading a backlog


class Intermediary:
    """Serve one channel on ``endpoint`` (``tcp://HOST:PORT``; port 0 picks a free one).

    The intermediary is a plain blocking loop over one socket (``zmq.Poller``, no asyncio): it
    is a process of its own, and a blocking poll wakes faster and costs less CPU per frame.
    Call :meth:`bind`, then :meth:`serve` (blocking; in a thread if you must share a process);
    :meth:`stop` may be called from any thread or a signal handler.
    """

    def __init__(self, channel: str, endpoint: str, *, timing: Timing = Timing(),
                 max_queue_bytes: int = 256 * 1024 * 1024,
                 ctx: zmq.Context | None = None, control: ControlSocket | None = None,
                 name: str = "", drain_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.channel = channel
        self._want = endpoint
        self.timing = timing
        self.max_queue_bytes = max_queue_bytes
        self._ctx = ctx or zmq.Context.instance()
        self.stats = IntermediaryStats()
        self.endpoint = ""
        self._bound = ""  # the endpoint as bound (without the key)
        self._security = security()
        self._admission = Admission(channel, self._security, self.stats)
        self._peers: dict[bytes, Peer] = {}
        self._queue = BatchQueue(max_queue_bytes)
        self._rounds = ClaimRounds()
        self._sock: zmq.Socket | None = None
        self._stopped = False
        self._last_tick = self._last_beat = self._now = 0.0
        self._off_clock: OffCpuClock | None = None  # made by serve(), on its own thread
        self._off_tick = 0.0  # the off-CPU clock at the last tick
        self._behind_since: float | None = None  # when the last read left frames unread
        self.control = control
        self.name = name
        self.drain_timeout = drain_timeout
        self._drain_request: float | None = None  # set from a signal handler or thread
        self._draining = False
        # Every consumer that was here left after asking to leave (DRAIN, then GOODBYE): they
        # removed this intermediary, so what is queued here goes back to its producers.
        self._left_by_consumers = False
        self._drain_started = self._drain_deadline = 0.0
        self._drain_waiters: list[bytes] = []  # control clients waiting for the report
        self.drain_report: DrainReport | None = None
        self.on_drain: Callable[[], None] | None = None  # called when a drain starts

    # -- socket lifecycle -------------------------------------------------------------------

    def bind(self) -> str:
        """Bind the ROUTER socket and return the bound endpoint (with this process's key, in
        a process with keys: what producers and consumers connect to)."""
        self._sock = bind_router(self._ctx, self._bound or self._want)
        self._bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoint = self._security.advertise(self._bound)
        return self.endpoint

    def serve(self) -> None:
        """Serve until :meth:`stop` is called (returns within one tick of it)."""
        if self._sock is None:
            self.bind()
        timing = self.timing
        poll_ms = max(1, round(timing.tick * 1000))
        clock = time.monotonic
        self._last_tick = self._last_beat = self._now = clock()
        off_clock = self._off_clock = OffCpuClock()
        self._off_tick = off_clock.now()
        control = self.control
        linger = 0
        poller, polled = zmq.Poller(), None
        try:
            while not self._stopped:
                sock = self._sock
                assert sock is not None  # bound by bind(), rebound by _rebind()
                if control is None:
                    ready = sock.poll(poll_ms)
                else:
                    if polled is not sock:  # first time, or the socket was rebound
                        poller, polled = zmq.Poller(), sock
                        poller.register(sock, zmq.POLLIN)
                        poller.register(control.socket, zmq.POLLIN)
                    events = dict(poller.poll(poll_ms))
                    ready = sock in events
                    if control.socket in events:
                        self._on_control(control)
                now = self._now = clock()
                # Both clocks are read at this one instant and the tick keeps this pair: an
                # off-CPU reading taken after the frames would swallow a freeze among them.
                due = now - self._last_tick >= timing.tick
                off_now = off_clock.now() if due else 0.0
                if (due and timing.frozen(now - self._last_tick)
                        and timing.frozen(off_now - self._off_tick)):
                    # Frozen (SIGSTOP, stalled host): every peer has given up on us and what
                    # sits in our pipes is stale. Start afresh before reading any of it.
                    # (A late tick alone is no proof: on a loaded machine this thread may
                    # have been waiting for a CPU, or busy, while its peers still heard it.)
                    self._rebind()
                    self._last_tick = self._last_beat = now
                    self._off_tick = off_now
                    self._behind_since = None
                    continue
                if ready:
                    self._read(sock, now)
                if self._drain_request is not None and not self._draining:
                    self._start_drain(now, self._drain_request)
                if due:
                    self._tick(now, off_now)
                if self.drain_report is not None:
                    linger = DRAIN_LINGER_MS  # let the last acks leave
                    break
        finally:
            if self._sock is not None:
                self._sock.close(linger=linger)
                self._sock = None
            off_clock.close()

    def stop(self) -> None:
        """Make :meth:`serve` return at once (safe from another thread or a signal handler)."""
        self._stopped = True

    def request_drain(self, timeout: float | None = None) -> None:
        """Drain (within ``timeout`` s, default :attr:`drain_timeout`), then make :meth:`serve`
        return (safe from another thread or a signal handler). The outcome is
        :attr:`drain_report`."""
        if self._drain_request is None:
            self._drain_request = self.drain_timeout if timeout is None else timeout

    @property
    def draining(self) -> bool:
        """True from the start of a drain."""
        return self._draining

    def status(self) -> dict:
        """A JSON-able summary (the control socket's ``status``)."""
        return {"kind": "intermediary", "name": self.name, "channel": self.channel,
                "endpoints": [self.endpoint], "draining": self._draining,
                **peers_summary(self._peers.values(), self._queue),
                "claim_rounds_open": len(self._rounds),
                "counters": dataclasses.asdict(self.stats)}

    # -- control and drain --------------------------------------------------------------------

    def _on_control(self, control: ControlSocket) -> None:
        for identity, request in control.receive():
            self.stats.control_requests += 1
            if request.command == "status":
                control.reply(identity, {**self.status(),
                                         "control_bad_requests": control.bad_requests,
                                         "security": control.security_status()})
            else:
                self._drain_waiters.append(identity)
                self.request_drain(request.timeout)

    def _start_drain(self, now: float, timeout: float) -> None:
        self._draining = True
        if self.on_drain is not None:
            self.on_drain()  # e.g. deregister, so that no port adds this intermediary again
        self._drain_started = now
        self._drain_deadline = now + timeout
        log.info("intermediary %s draining (at most %.1f s)", self.endpoint, timeout)
        for peer in self._peers.values():
            if peer.role == p.ROLE_PRODUCER and peer.alive:
                self._tell_draining(peer)

    def _tell_draining(self, peer: Peer) -> None:
        peer.drain_pending = self._send(peer.rid, p.drain_frame())

    def _check_drain(self, now: float) -> None:
        """Finish the drain when nothing is left, or give up at its deadline."""
        done = not self._queue and not any(
            peer.inflight if peer.role == p.ROLE_CONSUMER else peer.drain_pending and peer.alive
            for peer in self._peers.values())
        if not done and now < self._drain_deadline:
            return
        report = DrainReport("intermediary", self.endpoint, done, now - self._drain_started,
                             () if done else self._leftovers())
        report.log(log)
        self.drain_report = report
        if self.control is not None:
            for identity in self._drain_waiters:
                self.control.reply(identity, report.to_dict())
        self._drain_waiters = []

    def _consumers_left(self) -> bool:
        """False when the queue can never be delivered here: every consumer is leaving, or
        none is connected and either this intermediary drains or the last consumers went
        after asking to leave (they removed it: a tick need not have seen them leaving, as
        DRAIN and GOODBYE can both arrive between two ticks)."""
        leaving = self._left_by_consumers
        for peer in self._peers.values():
            if peer.role == p.ROLE_CONSUMER:
                if not peer.leaving:
                    return True
                leaving = True
        return not (leaving or self._draining)

    def _refuse_queue(self) -> None:
        """No consumer left to take the queue: hand it back to the producers (NACK), who send
        it through the other intermediaries. None of it reached a consumer
        through us, except batches requeued from a dead consumer (their producer resends its
        own copy, unflagged: at-least-once, as after the loss of an intermediary)."""
        seqs: dict[bytes, list[int]] = {}
        for rid, _, _, seq, _ in self._queue.take_all():  # parked ones stay
            seqs.setdefault(rid, []).append(seq)
        for rid, first_seqs in seqs.items():
            self.stats.nacked_batches += len(first_seqs)
            for start in range(0, len(first_seqs), 100_000):
                self._send(rid, p.encode(p.Nack(tuple(first_seqs[start:start + 100_000]))))
        log.info("no consumer left: %d queued batches handed back to their producers",
                 sum(len(v) for v in seqs.values()))

    def _leftovers(self) -> tuple[Leftover, ...]:
        return drain_leftovers(self.endpoint, self._queue, self._peers.values())

    def _read(self, sock: zmq.Socket, now: float) -> None:
        """Handle what is waiting, for at most one tick: timers must keep running."""
        end = now + self.timing.tick
        clock = time.monotonic
        secure = self._security.secure
        while True:
            for _ in range(READ_CHECK_EVERY):
                try:
                    if secure:
                        parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        frames = [part.bytes for part in parts]
                        if not self._admission.admits(frames[0], parts[-1]):
                            continue
                    else:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    self._behind_since = None
                    return
                self._on_frames(frames)
            if clock() > end:
                break
        if self._behind_since is None:
            self._behind_since = now

    def _rebind(self) -> None:
        """Close and rebind the socket: every peer sees a new process and starts afresh."""
        self.stats.rebinds += 1
        log.warning("intermediary %s was frozen; rebinding %s", self.channel, self.endpoint)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._peers.clear()
        self._queue.clear()
        self._rounds.clear()
        self._sock = bind_router(self._ctx, self._bound, patience=REBIND_PATIENCE)

    # -- frames -----------------------------------------------------------------------------

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.stats.bad_frames += 1
            return
        rid, frame = frames
        try:
            kind = p.frame_type(frame)
            peer = self._peers.get(rid)
            if peer is not None:
                peer.last_heard = self._now
                if not peer.alive:  # a producer declared dead: a stranger until its HELLO
                    peer = None
            if kind == p.T_BATCH:
                self._on_batch(rid, peer, frame)
            elif kind == p.T_ACK:
                self._on_ack(rid, peer, frame)
                if peer is None and rid[:1] == CONSUMER_PREFIX:
                    self._ask_who(rid)
            elif kind == p.T_HEARTBEAT:
                if len(frame) != 2:
                    raise DecodeError("HEARTBEAT with a body")
                if peer is None and rid[:1] in (PRODUCER_PREFIX, CONSUMER_PREFIX):
                    # A peer we declared dead (it was only frozen) or never met: re-introduce.
                    self._ask_who(rid)
            elif kind == p.T_HELLO:
                self._on_hello(rid, p.decode(frame))
            elif kind == p.T_DRAIN:
                p.decode(frame)
                self._on_drain_frame(rid, peer)
            elif kind == p.T_CLAIM:
                self._on_claim(rid, peer, frame)
            elif kind == p.T_CLAIMED:
                self._on_claimed(rid, frame)
            elif kind == p.T_GOODBYE:
                p.decode(frame)
                self._on_goodbye(rid)
            else:
                raise DecodeError(f"frame type {kind} is not sent to an intermediary")
        except DecodeError as exc:
            self.stats.bad_frames += 1
            log.debug("dropped a bad frame from %r: %s", rid, exc)

    def _on_hello(self, rid: bytes, hello: p.Frame) -> None:
        assert isinstance(hello, p.Hello)
        prefix = PRODUCER_PREFIX if hello.role == p.ROLE_PRODUCER else CONSUMER_PREFIX
        if hello.channel != self.channel:
            raise DecodeError(f"HELLO for channel {hello.channel!r}, this is {self.channel!r}")
        if rid != prefix + hello.peer_id:
            raise DecodeError("HELLO whose peer id does not match its routing id")
        old = self._peers.get(rid)
        if old is not None and old.role == hello.role and hello.again:
            # Re-introduction on the same connection (answer to WHO, or a consumer that takes
            # back its DRAIN): nothing was lost on it.
            old.credit = hello.credit
            if not old.alive:  # it was frozen, and still wants what it sent us
                old.alive = True
                self._queue.unpark(rid)
            old.leaving = False
            old.drains_owed = 0
        else:
            if old is not None and old.role == p.ROLE_PRODUCER:
                # A new connection: the producer gave up on the old one and resends its batches.
                self.stats.dropped_stale_batches += self._queue.drop_from(rid)
                # Those at consumers too: they claim what they hold, and the producer resends
                # the rest; requeued here later (the consumer gone), a copy would be a duplicate.
                for peer in self._peers.values():
                    if peer.inflight:
                        for key in [key for key in peer.inflight if key[0] == hello.peer_id]:
                            del peer.inflight[key]
            elif old is not None:
                self._leave_rounds(rid)  # a CLAIM sent on the old connection may be lost too
            fresh = self._peers[rid] = Peer(hello.role, rid, self._now, credit=hello.credit)
            if old is not None and old.role == p.ROLE_CONSUMER:
                # A new connection: what was in flight on the old one may be lost, or may have
                # come through this one (libzmq routes to it from the moment it is attached,
                # before this HELLO is read). Only this consumer can tell: it gets it all back
                # and drops the copies of what it received, through either connection.
                self._requeue_inflight(old, back_to=fresh)
        if hello.role == p.ROLE_CONSUMER:
            self._left_by_consumers = False
        self._send(rid, p.heartbeat_frame())
        if self._draining and hello.role == p.ROLE_PRODUCER:
            self._tell_draining(self._peers[rid])
        self._dispatch_queue()

    def _on_goodbye(self, rid: bytes) -> None:
        """A peer leaves for good (GOODBYE is its last frame on this connection): forget it at
        once, not a timeout later, and do not count it as expired.

        A producer's queued batches stay queued (nobody resends them: they are its last
        word); if it had been declared dead, its parked batches are dropped (it resent them
        elsewhere or abandoned them). A consumer says GOODBYE only once everything it received
        is handled and acknowledged: what it was sent and did not acknowledge never reached
        its handler, and is requeued (flagged, as for any consumer that goes); no PEER_GONE,
        since it holds no claim for any producer."""
        peer = self._peers.pop(rid, None)
        if peer is None:
            return  # never met, or forgotten already
        self.stats.peers_left += 1
        consumer = peer.role == p.ROLE_CONSUMER
        log.info("%s %s left (GOODBYE)", "consumer" if consumer else "producer", rid[1:].hex())
        if not consumer:
            if not peer.alive:
                self.stats.dropped_stale_batches += self._queue.drop_from(rid)
            return
        self._requeue_inflight(peer)
        self._leave_rounds(rid)  # a round waiting for its answer will not get it
        if peer.leaving and not any(other.role == p.ROLE_CONSUMER
                                    for other in self._peers.values()):
            self._left_by_consumers = True
        self._dispatch_queue()

    def _on_drain_frame(self, rid: bytes, peer: Peer | None) -> None:
        if peer is None:
            if rid[:1] == CONSUMER_PREFIX:
                self._send(rid, p.drain_frame())  # nothing of ours is in flight to it
            return
        if peer.role == p.ROLE_PRODUCER:
            peer.drain_pending = False  # its answer: nothing more follows from it
            return
        peer.leaving = True
        peer.drains_owed += 1
        self._answer_leaving(peer)

    def _answer_leaving(self, peer: Peer) -> None:
        """Answer a leaving consumer's DRAINs once everything sent to it is acknowledged."""
        if peer.drains_owed and not peer.inflight:
            for _ in range(peer.drains_owed):
                self._send(peer.rid, p.drain_frame())
            peer.drains_owed = 0

    def _on_batch(self, rid: bytes, peer: Peer | None, frame: bytes) -> None:
        pid, seq, count = p.batch_header(frame)
        if peer is None and rid == PRODUCER_PREFIX + pid:
            # Its producer is unknown here (this process was rebound): refuse the batch so it
            # is sent again, and ask the producer to introduce itself.
            self.stats.nacked_batches += 1
            self._send(rid, p.encode(p.Nack((seq,))))
            self._ask_who(rid)
            return
        if peer is None or peer.role != p.ROLE_PRODUCER or rid != PRODUCER_PREFIX + pid:
            raise DecodeError("BATCH from a peer that is not that producer")
        self.stats.batches_in += 1
        if self._queue or not self._forward(rid, pid, seq, count, frame):
            if not self._queue.fits(len(frame)):
                self.stats.nacked_batches += 1
                self._send(rid, p.encode(p.Nack((seq,))))
                return
            self._queue.append((rid, pid, frame, seq, count))

    def _forward(self, producer_rid: bytes, pid: bytes, seq: int, count: int, frame: bytes) -> bool:
        """Send a batch to the consumer with the most credit; False if none can take it."""
        while True:
            best = None
            for peer in self._peers.values():
                if peer.role == p.ROLE_CONSUMER and peer.credit > 0 and not peer.leaving and (
                        best is None or peer.credit > best.credit):
                    best = peer
            if best is None:
                return False
            if self._send(best.rid, frame):
                best.credit -= count
                # Handled so far: at least the skipped prefix (a requeue must not deliver it).
                best.inflight[(pid, seq)] = [frame, count, p.batch_skip(frame)]
                self.stats.batches_out += 1
                return True
            self._consumer_gone(best)

    def _dispatch_queue(self) -> None:
        queue = self._queue
        while (item := queue.first()) is not None:
            rid, pid, frame, seq, count = item
            if not self._forward(rid, pid, seq, count, frame):
                return
            queue.pop_first()

    def _on_ack(self, rid: bytes, peer: Peer | None, frame: bytes) -> None:
        pid, credit, n = p.ack_header(frame)
        if peer is not None and peer.role == p.ROLE_CONSUMER:
            peer.credit += credit
            inflight = peer.inflight
            hold = frame[2] & p.ACK_HOLD  # claims of batches that came through another one
            for seq, handled in p.ack_entries(frame):
                entry = inflight.get((pid, seq))
                if entry is None:
                    if not hold:
                        self.stats.unknown_acks += 1
                elif handled >= entry[1]:
                    del inflight[(pid, seq)]
                elif handled > entry[2]:
                    entry[2] = handled
            if peer.drains_owed:
                self._answer_leaving(peer)
        if n:
            if self._send(PRODUCER_PREFIX + pid, frame):
                self.stats.acks_forwarded += 1
        if credit and self._queue:
            self._dispatch_queue()

    # -- claim rounds -------------------------------------------------------------------------

    def _on_claim(self, rid: bytes, peer: Peer | None, frame: bytes) -> None:
        """Forward a producer's CLAIM to every consumer; answer once all have answered."""
        claim = p.decode(frame)
        assert isinstance(claim, p.Claim)
        if rid != PRODUCER_PREFIX + claim.producer_id:
            raise DecodeError("CLAIM from a peer that is not that producer")
        if peer is None:
            self._ask_who(rid)  # the round is served all the same: it needs no producer record
        self.stats.claim_rounds += 1
        if self._rounds.full(claim.producer_id, claim.round):
            self._answer_round(Answer(claim.producer_id, claim.round, unanswered=True))
            return
        consumers = [peer.rid for peer in self._peers.values() if peer.role == p.ROLE_CONSUMER]
        asked = {cid for cid in consumers if self._send(cid, frame)}
        self._answer_round(self._rounds.open(claim.producer_id, claim.round, asked,
                                             missed=len(asked) < len(consumers)))

    def _on_claimed(self, rid: bytes, frame: bytes) -> None:
        claimed = p.decode(frame)
        assert isinstance(claimed, p.Claimed)
        try:
            self._answer_round(self._rounds.answered(claimed.producer_id, claimed.round, rid))
        except KeyError:
            self.stats.unknown_claims += 1

    def _leave_rounds(self, consumer_rid: bytes) -> None:
        """A consumer will not answer (declared gone, or reconnected): stop waiting for it."""
        for answer in self._rounds.leave(consumer_rid):
            self._answer_round(answer)

    def _answer_round(self, answer: Answer | None) -> None:
        if answer is not None:
            self._send(PRODUCER_PREFIX + answer.producer_id,
                       p.encode(p.Claimed(answer.round, answer.producer_id, answer.unanswered)))

    def _ask_who(self, rid: bytes) -> None:
        self.stats.who_sent += 1
        self._send(rid, p.encode(p.Who()))

    def _send(self, rid: bytes, frame: bytes) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.send(rid, zmq.SNDMORE | zmq.NOBLOCK)
            sock.send(frame, zmq.NOBLOCK)  # copying beats zero-copy tracking, even at 256 KiB
        except zmq.ZMQError:  # EHOSTUNREACH: peer gone; EAGAIN: its pipe is full
            self.stats.unroutable += 1
            return False
        return True

    # -- peers coming and going ---------------------------------------------------------------

    def _requeue_inflight(self, peer: Peer, back_to: Peer | None = None) -> None:
        """Put a consumer's unacknowledged batches back, flagged: sent to ``back_to`` (the same
        consumer on a new connection) if given and it can take them, else at the head of the
        queue."""
        for (pid, seq), (frame, count, acked) in peer.inflight.items():
            self.stats.redelivered_batches += 1
            frame = p.mark_redelivered(frame, acked)
            item = (PRODUCER_PREFIX + pid, pid, frame, seq, count)
            producer = self._peers.get(item[0])
            if producer is not None and not producer.alive:
                self._queue.park_item(item)  # its producer will not want it back after a cut
            elif back_to is not None and self._send(back_to.rid, frame):
                back_to.credit -= count
                back_to.inflight[(pid, seq)] = [frame, count, acked]
                self.stats.batches_out += 1
            else:
                self._queue.put_back(item)
        peer.inflight.clear()

    def _consumer_gone(self, peer: Peer) -> None:
        """Redeliver a lost consumer's batches (flagged) and tell producers it is gone."""
        self._peers.pop(peer.rid, None)
        self._requeue_inflight(peer)
        gone = p.encode(p.PeerGone(peer.rid[1:]))
        for other in list(self._peers.values()):
            if other.role == p.ROLE_PRODUCER and other.alive:
                self._send(other.rid, gone)
        self._leave_rounds(peer.rid)  # after PEER_GONE: the producer learns that first
        self._dispatch_queue()

    def _tick(self, now: float, off_now: float) -> None:
        timing = self.timing
        self._last_tick = now
        self._off_tick = off_now
        if self._queue and not self._consumers_left():
            self._refuse_queue()
        if self._draining and self.drain_report is None:
            self._check_drain(now)
        if now - self._last_beat >= timing.heartbeat:
            self._last_beat = now
            beat = p.heartbeat_frame()
            for peer in list(self._peers.values()):
                if peer.alive:
                    self._send(peer.rid, beat)
        if self._behind_since is not None and now - self._behind_since < timing.timeout:
            return  # frames wait unread: the heartbeat of a peer may be among them
        for peer in list(self._peers.values()):
            if peer.alive and timing.is_silent(peer.last_heard, now,
                                               consumer=peer.role == p.ROLE_CONSUMER):
                self.stats.peers_expired += 1
                log.warning("%s %s silent for %.0f ms: declared dead",
                            "consumer" if peer.role == p.ROLE_CONSUMER else "producer",
                            peer.rid[1:].hex(), (now - peer.last_heard) * 1000)
                if peer.role == p.ROLE_CONSUMER:
                    self.stats.consumers_expired += 1
                    self._consumer_gone(peer)
                else:
                    self._producer_gone(peer)

    def _producer_gone(self, peer: Peer) -> None:
        """A silent producer keeps its record (bounded), so that it is welcome back with HELLO
        AGAIN if it was only frozen; its queued batches are parked until then."""
        peer.alive = False
        self._queue.park(peer.rid)
        dead = [rid for rid, pr in self._peers.items() if not pr.alive]
        for rid in dead[:max(0, len(dead) - MAX_DEAD_PRODUCERS)]:
            del self._peers[rid]
            self.stats.dropped_stale_batches += self._queue.drop_from(rid)
