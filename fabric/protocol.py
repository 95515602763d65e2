"""The fabric wire format: frames <-> frozen dataclasses (pure: no sockets, no clock).

Every fabric message is ONE ZeroMQ frame (a ROUTER adds the usual routing-id frame in front).
Each frame starts with a version byte and a type byte; all integers are big-endian. The full
description, precise enough for another language, is in docs/protocol.md.

    type        direction                           layout after (version, type)
    HELLO       producer/consumer -> intermediary   role u8, flags u8 (AGAIN), peer_id 16s,
                                                    credit u32, channel (utf-8, rest of the frame)
    HEARTBEAT   both ways                           (nothing)
    BATCH       producer -> intermediary -> consumer flags u8, pad u8, producer_id 16s,
                                                    first_seq u64, count u32, skip u32,
                                                    acked_below u64, body (msgpack array)
    ACK         consumer -> intermediary -> producer flags u8, pad u8, producer_id 16s,
                                                    consumer_id 16s, credit u32,
                                                    entries: (first_seq u64, handled u32)*
    NACK        intermediary -> producer            pad u16, first_seq u64 (one or more)
    PEER_GONE   intermediary -> producer            pad u16, consumer_id 16s
    WHO         intermediary -> producer/consumer   (nothing): "say HELLO again"
    DRAIN       both ways                           (nothing): "no new batches on this link"
    CLAIM       producer -> intermediary -> consumer flags u8, pad u8, round u32, producer_id 16s,
                                                    lost intermediary's endpoint (utf-8, rest)
    CLAIMED     consumer -> intermediary -> producer flags u8 (UNANSWERED), pad u8, round u32,
                                                    producer_id 16s
    GOODBYE     producer/consumer -> intermediary   (nothing): "I leave: forget me now"

The intermediary reads only the fixed headers; a batch body (the payloads) is decoded by the
consumer alone.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Union

import msgpack

from fabric.errors import DecodeError

VERSION = 1
MAX_FRAME = 4 * 1024 * 1024
"""Largest frame any fabric process accepts; larger frames are counted and dropped."""
ID_SIZE = 16

T_HELLO = 1
T_HEARTBEAT = 2
T_BATCH = 3
T_ACK = 4
T_NACK = 5
T_PEER_GONE = 6
T_WHO = 7
T_DRAIN = 8
T_CLAIM = 9
T_CLAIMED = 10
T_GOODBYE = 11

ROLE_PRODUCER = 1
ROLE_CONSUMER = 2

HELLO_AGAIN = 0x01
"""HELLO flag: sent on the same connection in answer to WHO (not a new connection)."""
BATCH_REDELIVERED = 0x01
"""BATCH flag: the batch may already have been (partly) handled by a consumer that died."""
ACK_HOLD = 0x01
"""ACK flag: sent after an intermediary was lost; batches not fully handled are held by the
sending consumer, which will acknowledge them later, so the producer must not resend them."""
CLAIMED_UNANSWERED = 0x01
"""CLAIMED flag (intermediary -> producer): a consumer was declared gone, or reconnected, before
it answered; it may have handled some of the lost intermediary's batches."""
MAX_ENDPOINT = 255

_HELLO = struct.Struct(">BBBB16sI")
_BATCH = struct.Struct(">BBBB16sQIIQ")
_ACK = struct.Struct(">BBBB16s16sI")
_ACK_ENTRY = struct.Struct(">QI")
_NACK = struct.Struct(">BBH")
_SEQ = struct.Struct(">Q")
_PEER_GONE = struct.Struct(">BBH16s")
_CLAIM = struct.Struct(">BBBBI16s")
_HEARTBEAT_FRAME = bytes((VERSION, T_HEARTBEAT))
_WHO_FRAME = bytes((VERSION, T_WHO))
_DRAIN_FRAME = bytes((VERSION, T_DRAIN))
_GOODBYE_FRAME = bytes((VERSION, T_GOODBYE))

BATCH_HEADER_SIZE = _BATCH.size
_SKIP_OFFSET = 32
_ACKED_BELOW_OFFSET = 36
ACK_HEADER_SIZE = _ACK.size
MAX_CHANNEL = 255
U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Hello:
    """A producer or consumer introduces itself to an intermediary (sent on every (re)connect).

    ``credit`` is the number of messages a consumer is ready to receive from this intermediary;
    producers send 0.
    """

    role: int
    peer_id: bytes
    credit: int
    channel: str
    again: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Proof of life, sent every heartbeat interval by every process to each peer socket."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages ``first_seq .. first_seq+count-1`` of one producer; ``body`` is kept encoded.

    ``skip`` leading messages were already handled and must not be delivered again;
    every sequence number below ``acked_below`` is acknowledged at the producer, so a consumer may
    forget them (this bounds its duplicate-detection window).
    """

    producer_id: bytes
    first_seq: int
    count: int
    body: bytes
    skip: int = 0
    acked_below: int = 0
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """A consumer has handled the first ``handled`` messages of each listed batch.

    ``entries`` holds ``(first_seq, handled)`` pairs, all for ``producer_id``. ``credit`` is
    returned to the intermediary that receives the frame. ``hold`` marks an ack rerouted after an
    intermediary was lost (see :data:`ACK_HOLD`).
    """

    producer_id: bytes
    consumer_id: bytes
    credit: int
    entries: tuple[tuple[int, int], ...]
    hold: bool = False


@dataclass(frozen=True, slots=True)
class Nack:
    """An intermediary could not queue these batches; the producer sends them elsewhere."""

    first_seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PeerGone:
    """An intermediary lost a consumer; batches it held for the producer must be redelivered."""

    consumer_id: bytes


@dataclass(frozen=True, slots=True)
class Who:
    """An intermediary does not know the sender (it declared it dead, or restarted): the
    sender must say HELLO again on the same connection."""


@dataclass(frozen=True, slots=True)
class Drain:
    """No new batches on this connection (meaning by direction, see docs/protocol.md).

    intermediary -> producer: "I am draining: send me nothing new; what I hold is delivered and
    acknowledged"; producer -> intermediary: the answer, "nothing more follows from me";
    consumer -> intermediary: "I am leaving: route nothing more to me"; intermediary ->
    consumer: the answer, sent once all it sent that consumer is acknowledged.
    """


@dataclass(frozen=True, slots=True)
class Claim:
    """A producer lost intermediary ``lost`` (its endpoint): every consumer must claim, through
    the intermediary that forwards this, what it received of the producer's batches through
    ``lost`` (ACK with HOLD), then answer CLAIMED. The producer resends the rest only then."""

    round: int
    producer_id: bytes
    lost: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """The answer to a CLAIM: from a consumer, "my claims went before this"; from the
    intermediary to the producer, "every consumer here answered" (``unanswered``: one was
    declared gone, or reconnected, first)."""

    round: int
    producer_id: bytes
    unanswered: bool = False


@dataclass(frozen=True, slots=True)
class Goodbye:
    """The sender leaves this intermediary for good and is to be forgotten at once (its last
    frame on the connection).

    From a producer: nothing it sent will be resent or acknowledged to it any more. From a
    consumer: every batch it received is handled and acknowledged (a consumer that leaves
    work unfinished says nothing and is declared dead, see docs/protocol.md).
    """


Frame = Union[Hello, Heartbeat, Batch, Ack, Nack, PeerGone, Who, Drain, Claim, Claimed, Goodbye]


def _check_id(value: bytes, what: str) -> None:
    if len(value) != ID_SIZE:
        raise ValueError(f"{what} must be {ID_SIZE} bytes, got {len(value)}")


def encode(msg: Frame) -> bytes:
    """Encode one message as one frame."""
    if isinstance(msg, Heartbeat):
        return _HEARTBEAT_FRAME
    if isinstance(msg, Who):
        return _WHO_FRAME
    if isinstance(msg, Drain):
        return _DRAIN_FRAME
    if isinstance(msg, Goodbye):
        return _GOODBYE_FRAME
    if isinstance(msg, Batch):
        _check_id(msg.producer_id, "producer_id")
        flags = BATCH_REDELIVERED if msg.redelivered else 0
        header = _BATCH.pack(VERSION, T_BATCH, flags, 0, msg.producer_id, msg.first_seq,
                             msg.count, msg.skip, msg.acked_below)
        return header + msg.body
    if isinstance(msg, Ack):
        _check_id(msg.producer_id, "producer_id")
        _check_id(msg.consumer_id, "consumer_id")
        flags = ACK_HOLD if msg.hold else 0
        parts = [_ACK.pack(VERSION, T_ACK, flags, 0, msg.producer_id, msg.consumer_id, msg.credit)]
        parts.extend(_ACK_ENTRY.pack(seq, handled) for seq, handled in msg.entries)
        return b"".join(parts)
    if isinstance(msg, Hello):
        _check_id(msg.peer_id, "peer_id")
        channel = msg.channel.encode()
        if len(channel) > MAX_CHANNEL:
            raise ValueError(f"channel name longer than {MAX_CHANNEL} bytes")
        flags = HELLO_AGAIN if msg.again else 0
        return _HELLO.pack(VERSION, T_HELLO, msg.role, flags, msg.peer_id, msg.credit) + channel
    if isinstance(msg, Nack):
        return _NACK.pack(VERSION, T_NACK, 0) + b"".join(_SEQ.pack(s) for s in msg.first_seqs)
    if isinstance(msg, PeerGone):
        _check_id(msg.consumer_id, "consumer_id")
        return _PEER_GONE.pack(VERSION, T_PEER_GONE, 0, msg.consumer_id)
    if isinstance(msg, Claim):
        _check_id(msg.producer_id, "producer_id")
        lost = msg.lost.encode()
        if len(lost) > MAX_ENDPOINT:
            raise ValueError(f"endpoint longer than {MAX_ENDPOINT} bytes")
        return _CLAIM.pack(VERSION, T_CLAIM, 0, 0, msg.round, msg.producer_id) + lost
    if isinstance(msg, Claimed):
        _check_id(msg.producer_id, "producer_id")
        flags = CLAIMED_UNANSWERED if msg.unanswered else 0
        return _CLAIM.pack(VERSION, T_CLAIMED, flags, 0, msg.round, msg.producer_id)
    raise TypeError(f"not a fabric message: {msg!r}")


def batch_frame(producer_id: bytes, first_seq: int, count: int, acked_below: int,
                body: bytes) -> bytes:
    """A BATCH frame (the producer's hot path: same bytes as ``encode(Batch(...))``)."""
    return _BATCH.pack(VERSION, T_BATCH, 0, 0, producer_id, first_seq, count, 0,
                       acked_below) + body


def frame_type(frame: bytes) -> int:
    """Check the version and size of ``frame`` and return its type byte (cheap: no decoding)."""
    size = len(frame)
    if size < 2:
        raise DecodeError(f"frame of {size} bytes is too short")
    if size > MAX_FRAME:
        raise DecodeError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
    if frame[0] != VERSION:
        raise DecodeError(f"unsupported protocol version {frame[0]} (this side speaks {VERSION})")
    return frame[1]


def batch_header(frame: bytes) -> tuple[bytes, int, int]:
    """``(producer_id, first_seq, count)`` of a BATCH frame whose type was already checked."""
    if len(frame) < BATCH_HEADER_SIZE:
        raise DecodeError("BATCH frame shorter than its header")
    _, _, _, _, producer_id, first_seq, count, skip, _ = _BATCH.unpack_from(frame)
    if count == 0 or skip > count:
        raise DecodeError(f"BATCH with count {count} and skip {skip}")
    return producer_id, first_seq, count


def batch_skip(frame: bytes) -> int:
    """The ``skip`` of a BATCH frame checked by :func:`batch_header`."""
    return int.from_bytes(frame[_SKIP_OFFSET:_SKIP_OFFSET + 4], "big")


def ack_header(frame: bytes) -> tuple[bytes, int, int]:
    """``(producer_id, credit, entry_count)`` of an ACK frame whose type was already checked."""
    size = len(frame) - ACK_HEADER_SIZE
    if size < 0 or size % _ACK_ENTRY.size:
        raise DecodeError(f"ACK frame of {len(frame)} bytes has a partial entry")
    _, _, _, _, producer_id, _, credit = _ACK.unpack_from(frame)
    return producer_id, credit, size // _ACK_ENTRY.size


def ack_entries(frame: bytes) -> list[tuple[int, int]]:
    """The ``(first_seq, handled)`` entries of an ACK frame checked by :func:`ack_header`."""
    return list(_ACK_ENTRY.iter_unpack(memoryview(frame)[ACK_HEADER_SIZE:]))


def mark_redelivered(frame: bytes, skip: int) -> bytes:
    """A copy of BATCH ``frame`` flagged redelivered, whose first ``skip`` messages are skipped."""
    out = bytearray(frame)
    out[2] |= BATCH_REDELIVERED
    struct.pack_into(">I", out, _SKIP_OFFSET, skip)
    return bytes(out)


def set_acked_below(frame: bytes, acked_below: int) -> bytes:
    """A copy of BATCH ``frame`` carrying a newer ``acked_below``."""
    out = bytearray(frame)
    struct.pack_into(">Q", out, _ACKED_BELOW_OFFSET, acked_below)
    return bytes(out)


def decode(frame: bytes) -> Frame:
    """Decode one frame; raise :class:`DecodeError` for anything malformed. Payloads stay
    encoded."""
    kind = frame_type(frame)
    size = len(frame)
    try:
        if kind == T_BATCH:
            batch_header(frame)
            _, _, flags, _, pid, first_seq, count, skip, acked_below = _BATCH.unpack_from(frame)
            return Batch(pid, first_seq, count, bytes(frame[BATCH_HEADER_SIZE:]), skip, acked_below,
                         bool(flags & BATCH_REDELIVERED))
        if kind == T_ACK:
            ack_header(frame)
            _, _, flags, _, pid, cid, credit = _ACK.unpack_from(frame)
            return Ack(pid, cid, credit, tuple(ack_entries(frame)), bool(flags & ACK_HOLD))
        if kind == T_HEARTBEAT:
            if size != 2:
                raise DecodeError(f"HEARTBEAT of {size} bytes")
            return Heartbeat()
        if kind == T_HELLO:
            _, _, role, flags, peer_id, credit = _HELLO.unpack_from(frame)
            if role not in (ROLE_PRODUCER, ROLE_CONSUMER):
                raise DecodeError(f"HELLO with unknown role {role}")
            channel = bytes(frame[_HELLO.size:])
            if len(channel) > MAX_CHANNEL:
                raise DecodeError("HELLO channel name too long")
            return Hello(role, peer_id, credit, channel.decode(), bool(flags & HELLO_AGAIN))
        if kind == T_NACK:
            rest = size - _NACK.size
            if rest <= 0 or rest % _SEQ.size:
                raise DecodeError(f"NACK of {size} bytes")
            view = memoryview(frame)[_NACK.size:]
            return Nack(tuple(s for (s,) in _SEQ.iter_unpack(view)))
        if kind == T_WHO:
            if size != 2:
                raise DecodeError(f"WHO of {size} bytes")
            return Who()
        if kind == T_DRAIN:
            if size != 2:
                raise DecodeError(f"DRAIN of {size} bytes")
            return Drain()
        if kind == T_GOODBYE:
            if size != 2:
                raise DecodeError(f"GOODBYE of {size} bytes")
            return Goodbye()
        if kind == T_PEER_GONE:
            if size != _PEER_GONE.size:
                raise DecodeError(f"PEER_GONE of {size} bytes")
            return PeerGone(_PEER_GONE.unpack(frame)[3])
        if kind == T_CLAIM:
            if not _CLAIM.size < size <= _CLAIM.size + MAX_ENDPOINT:
                raise DecodeError(f"CLAIM of {size} bytes")
            _, _, _, _, number, pid = _CLAIM.unpack_from(frame)
            return Claim(number, pid, bytes(frame[_CLAIM.size:]).decode())
        if kind == T_CLAIMED:
            if size != _CLAIM.size:
                raise DecodeError(f"CLAIMED of {size} bytes")
            _, _, flags, _, number, pid = _CLAIM.unpack(frame)
            return Claimed(number, pid, bool(flags & CLAIMED_UNANSWERED))
    except (struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"malformed frame of type {kind}: {exc}") from exc
    raise DecodeError(f"unknown frame type {kind}")


def encode_payloads(payloads: list[Any]) -> bytes:
    """The body of a batch: a msgpack array of the payloads (bytes stay bytes)."""
    return msgpack.packb(payloads, use_bin_type=True)


def decode_payloads(body: bytes, count: int) -> list[Any]:
    """Decode a batch body; it must be a msgpack array of exactly ``count`` items."""
    try:
        payloads = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise DecodeError(f"batch body does not decode: {exc}") from exc
    if not isinstance(payloads, list) or len(payloads) != count:
        raise DecodeError(f"batch body is not an array of {count} payloads")
    return payloads


def claim_producer(frame: bytes) -> bytes:
    """The producer id of a CLAIM or CLAIMED frame whose type was already checked (what an
    intermediary reads to route it)."""
    if len(frame) < _CLAIM.size:
        raise DecodeError(f"frame of type {frame[1]} shorter than {_CLAIM.size} bytes")
    return bytes(frame[8:24])


def heartbeat_frame() -> bytes:
    """The (constant) HEARTBEAT frame."""
    return _HEARTBEAT_FRAME


def drain_frame() -> bytes:
    """The (constant) DRAIN frame."""
    return _DRAIN_FRAME


def goodbye_frame() -> bytes:
    """The (constant) GOODBYE frame."""
    return _GOODBYE_FRAME
