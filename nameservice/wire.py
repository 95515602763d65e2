"""The name service's wire format: frame header, Raft peer messages, client requests and replies.

Every ZeroMQ frame a node or client sends is::

    byte 0     VERSION (1)
    byte 1     kind: PEER (Raft messages between nodes), REQUEST (client → node),
               REPLY (node → client), EVENT (node → client: watch pushes),
               SNAP (node → node: a snapshot streamed in chunks, and its acknowledgements)
    bytes 2..  one msgpack array: a batch of messages / requests / replies

Batching is the point: a node sends one frame per peer per loop iteration holding every Raft
message for it, and one frame per client holding every reply; a client sends one frame per
flush holding every request it has queued.

Peer message: ``[tag, frm, to, term, field...]`` with ``tag`` the index of the type in
``raft.messages.MESSAGE_TYPES`` and the fields in declaration order; an entry is
``[term, index, data]``, a snapshot ``[index, term, [voter...], data, [learner...]]``.

Snapshot stream message (in SNAP frames; see "Snapshot streaming" in docs/nameservice.md):
``[0, frm, to, term, index, snap_term, [voter...], [learner...], size, crc, chunk_size]``
offers a snapshot, ``[1, frm, to, term, index, offset, crc, data]`` carries one chunk of it,
``[2, frm, to, term, index, status, offset]`` acknowledges (``ACK_*``).

Client request: ``[rid, op, arg...]``; reply ``[rid, status, payload]`` (see the ``OP_*`` and
``ST_*`` constants and docs/nameservice.md). ``rid`` is the client's own request number, echoed.

Watch push (in EVENT frames, unasked): ``[[watch_id...], 0, from_rev, to_rev, [[type, kv]...]]``
carries, for each watch listed, every event matching it with a revision in
``from_rev..to_rev`` (none: progress; no watch ids at all: a heartbeat of the node);
``[[watch_id...], 1, reason, message,
oldest]`` says the node dropped those watches (``CANCEL_*``). Each push of a watch starts where
the previous one ended, so a client sees any lost push as a gap in the revisions.

Decoding never raises anything but ``DecodeError``: unknown version or kind, bad msgpack,
wrong types, negative or oversized integers, wrong array lengths, nesting as deep as msgpack
allows (its unpacker refuses more than 1,024 levels; error messages never print a
container). Raft semantics (addressing, terms, entry order) are the core's to check (it counts
and drops what is wrong).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from nameservice.errors import DecodeError, shown

if TYPE_CHECKING:
    from nameservice.raft import messages as m
    from nameservice.raft.types import ChangeKind, Entry, Snapshot

VERSION = 1
PEER, REQUEST, REPLY, EVENT, SNAP = 1, 2, 3, 4, 5
_HEADERS = {kind: bytes([VERSION, kind]) for kind in (PEER, REQUEST, REPLY, EVENT, SNAP)}

MAX_PEER_FRAME = 512 << 20
"""Largest peer frame accepted (an old-style SnapshotRequest carries a whole snapshot)."""
MAX_SNAP_CHUNK = 4 << 20
"""Largest chunk of a streamed snapshot (and its ``chunk_size``)."""
MAX_SNAP_FRAME = MAX_SNAP_CHUNK + 4096
"""Largest SNAP frame accepted: one chunk and its header."""
MAX_CLIENT_FRAME = 8 << 20
"""Largest client request or reply frame accepted."""
MAX_BATCH = 65_536
"""Most messages, requests or replies one frame may hold."""
MAX_REPLY_BYTES = MAX_CLIENT_FRAME - (1 << 20)
"""Most key and value bytes the replies to one request frame carry (7 MiB), so that they fit in
one reply frame with room for the frame's other replies. A RANGE whose reply alone would be
larger is refused (BAD_REQUEST, "reply too large"); a read that would take the frame's replies
past it is answered BUSY (the client retries it)."""

# Client operations.
OP_WRITE, OP_GET, OP_RANGE, OP_STATUS = 1, 2, 3, 4
OP_KEEPALIVE = 8
"""``[rid, 8, lease_id]``: renew a lease on the leader; OK payload: its TTL in ms, 0 if gone."""
OP_STALE_WRITE = 9
"""``[rid, 9, key, value|nil]``: a quorum-less write (nil deletes), kept by the node asked;
OK payload: whether the key existed in that node's stale view before the write."""
# Watch operations (served by every node, followers too).
OP_WATCH, OP_WATCH_CANCEL = 10, 11
# Membership: the configuration (served by every node) and changes to it (the leader).
OP_MEMBERS, OP_MEMBER_CHANGE = 12, 13
_OPS = frozenset((OP_WRITE, OP_GET, OP_RANGE, OP_STATUS, OP_KEEPALIVE, OP_STALE_WRITE,
                  OP_WATCH, OP_WATCH_CANCEL, OP_MEMBERS, OP_MEMBER_CHANGE))
MEMBER_ADD_LEARNER, MEMBER_PROMOTE, MEMBER_REMOVE = 1, 2, 3
"""The kinds of a MEMBER_CHANGE (the Raft core's ``ChangeKind`` values)."""
# Reply statuses.
ST_OK, ST_NOT_LEADER, ST_BUSY, ST_BAD_REQUEST, ST_UNAVAILABLE = 0, 1, 2, 3, 4
ST_FORBIDDEN = 5
"""The sender's key has no right to this request (docs/security.md)."""
# Watch push kinds and the reasons a node drops a watch.
PUSH_EVENTS, PUSH_CANCEL = 0, 1
CANCEL_COMPACTED, CANCEL_OVERFLOW, CANCEL_RESTORED, CANCEL_NO_LEADER = 1, 2, 3, 4

_MAX_INT = (1 << 63) - 1
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack

# ------------------------------------------------------------------------- frames


def frame(kind: int, body: list) -> bytes:
    """One frame of ``kind`` carrying the msgpack array ``body``."""
    return _HEADERS[kind] + _pack(body)


def split_frame(data: bytes, limit: int) -> tuple[int, list]:
    """Check the header and size of a frame; return its kind and its decoded batch."""
    n = len(data)
    if n < 3:
        raise DecodeError(f"frame of {n} bytes is too short")
    if n > limit:
        raise DecodeError(f"frame of {n} bytes is over the limit of {limit}")
    if data[0] != VERSION:
        raise DecodeError(f"unknown frame version {data[0]}")
    kind = data[1]
    if kind not in _HEADERS:
        raise DecodeError(f"unknown frame kind {kind}")
    try:
        body = msgpack.unpackb(
            memoryview(data)[2:], raw=False, strict_map_key=True, use_list=True,
            max_bin_len=limit, max_str_len=1 << 20, max_array_len=max(MAX_BATCH, 1 << 20),
            max_map_len=1 << 10,
        )
    except Exception as exc:  # msgpack raises many kinds on garbage; all mean the same here
        raise DecodeError(f"not valid msgpack ({type(exc).__name__}: {exc})") from None
    if type(body) is not list:
        raise DecodeError("a frame must hold an array")
    if len(body) > MAX_BATCH:
        raise OversizedBatch(len(body), body)
    return kind, body


class OversizedBatch(DecodeError):
    """A frame holding more than ``MAX_BATCH`` items; ``body`` is what it held (a node answers
    each request in it that has a request id)."""

    def __init__(self, count: int, body: list) -> None:
        super().__init__(f"a frame holds at most {MAX_BATCH:,} items, this one {count:,}")
        self.body = body


def frame_kind(data: bytes) -> int:
    """The kind byte of a frame (0 if too short); the frame is not otherwise checked."""
    return data[1] if len(data) >= 2 and data[0] == VERSION else 0


# ------------------------------------------------------------------------- peer messages
# The peer codec's tables are filled on first use (``_peer_tables``): a client never sends a
# Raft message, and so never loads the Raft message classes (a ``fabric kv get`` starts sooner).

_U, _B, _Y, _ENTRIES, _SNAP = range(5)
_SPECS: dict[type, tuple[tuple[str, int], ...]] = {}
_TAGS: dict[type, int] = {}
_DECODERS: list[tuple[type, tuple[Callable[[Any], Any], ...]]] = []


def _peer_tables() -> None:
    """Fill the peer codec's tables: each message type's tag and fields, in order."""
    from nameservice.raft import messages as m

    specs: dict[type, tuple[tuple[str, int], ...]] = {
        m.VoteRequest: (("last_index", _U), ("last_term", _U), ("pre_vote", _B),
                        ("transfer", _B)),
        m.VoteResponse: (("granted", _B), ("pre_vote", _B)),
        m.AppendRequest: (("prev_index", _U), ("prev_term", _U), ("entries", _ENTRIES),
                          ("commit", _U)),
        m.AppendResponse: (("index", _U), ("reject", _B), ("hint_index", _U),
                           ("hint_term", _U)),
        m.Heartbeat: (("commit", _U), ("ctx", _Y)),
        m.HeartbeatResponse: (("ctx", _Y),),
        m.SnapshotRequest: (("snapshot", _SNAP),),
        m.TimeoutNow: (),
        m.ReadIndexRequest: (("ctx", _Y),),
        m.ReadIndexResponse: (("index", _U), ("ctx", _Y)),
    }
    assert set(specs) == set(m.MESSAGE_TYPES)
    _SPECS.update(specs)
    _TAGS.update({cls: tag for tag, cls in enumerate(m.MESSAGE_TYPES)})
    _DECODERS[:] = [(cls, tuple(_CHECK[kind] for _, kind in specs[cls]))
                    for cls in m.MESSAGE_TYPES]


def message_to_wire(msg: m.Message) -> list:
    """The msgpack-ready array of one Raft message."""
    if not _TAGS:
        _peer_tables()
    t = type(msg)
    out = [_TAGS[t], msg.frm, msg.to, msg.term]
    for name, kind in _SPECS[t]:
        value = getattr(msg, name)
        if kind == _ENTRIES:
            value = [[e.term, e.index, e.data] for e in value]
        elif kind == _SNAP:
            meta = value.meta
            value = [meta.index, meta.term, list(meta.voters), value.data, list(meta.learners)]
        out.append(value)
    return out


def _uint(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= _MAX_INT:
        raise DecodeError(f"expected a non-negative int, got {shown(v)}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"expected a bool, got {type(v).__name__}")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise DecodeError(f"expected bytes, got {type(v).__name__}")
    return v


def _entries(v: Any) -> tuple[Entry, ...]:
    from nameservice.raft.types import Entry  # loaded with the tables; here for the name

    if type(v) is not list:
        raise DecodeError("entries must be an array")
    out = []
    for e in v:
        if type(e) is not list or len(e) != 3:
            raise DecodeError("an entry is an array of 3")
        term, index, data = e
        out.append(Entry(_uint(term), _uint(index), _bytes(data)))
    return tuple(out)


def _snapshot(v: Any) -> Snapshot:
    from nameservice.raft.types import Snapshot, SnapshotMeta

    if (type(v) is not list or len(v) != 5 or type(v[2]) is not list
            or type(v[4]) is not list):
        raise DecodeError("a snapshot is [index, term, [voter...], data, [learner...]]")
    index, term, voters, data, learners = v
    return Snapshot(SnapshotMeta(_uint(index), _uint(term), tuple(_uint(x) for x in voters),
                                 tuple(_uint(x) for x in learners)), _bytes(data))


_CHECK: dict[int, Callable[[Any], Any]] = {_U: _uint, _B: _bool, _Y: _bytes,
                                            _ENTRIES: _entries, _SNAP: _snapshot}


def message_from_wire(w: Any) -> m.Message:
    """Check and rebuild one Raft message from its array; ``DecodeError`` if malformed."""
    if not _DECODERS:
        _peer_tables()
    if type(w) is not list or len(w) < 4:
        raise DecodeError("a peer message is an array of at least 4")
    tag = w[0]
    if type(tag) is not int or not 0 <= tag < len(_DECODERS):
        raise DecodeError(f"unknown peer message tag {shown(tag)}")
    cls, checks = _DECODERS[tag]
    if len(w) != 4 + len(checks):
        raise DecodeError(f"{cls.__name__}: expected {len(checks)} fields, got {len(w) - 4}")
    args: list[object] = [_uint(w[1]), _uint(w[2]), _uint(w[3])]
    for check, value in zip(checks, w[4:]):
        args.append(check(value))
    return cls(*args)


def encode_peer_frame(messages: list) -> bytes:
    """One PEER frame holding ``messages`` (all for the same peer)."""
    return frame(PEER, [message_to_wire(x) for x in messages])


def decode_peer_batch(body: list) -> list:
    """The Raft messages of a PEER frame's batch (from ``split_frame``)."""
    return [message_from_wire(w) for w in body]


# ------------------------------------------------------------------------- snapshot streams
# A leader streams a snapshot to a follower in SNAP frames instead of one SnapshotRequest
# (nameservice/server/snapshots.py). Every message names its stream by (frm or to: the
# leader, term: the leader's term when it offered, index: the snapshot's last index).

SNAP_OFFER, SNAP_CHUNK, SNAP_ACK = 0, 1, 2
ACK_PROGRESS, ACK_REWIND, ACK_DONE, ACK_UNKNOWN = 0, 1, 2, 3
"""Acknowledgement statuses: PROGRESS — the receiver holds ``[0, offset)``, verified;
REWIND — send from ``offset`` next (the answer to an offer, a gap, a refused chunk);
DONE — the whole image verified and handed to Raft; UNKNOWN — no such stream here: offer
again."""


@dataclass(frozen=True, slots=True)
class SnapOffer:
    """A leader offers a snapshot: its meta, ``size`` bytes with CRC32 ``crc``, sent in chunks
    of ``chunk_size`` bytes (the last one shorter)."""

    frm: int
    to: int
    term: int
    index: int
    snap_term: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    size: int
    crc: int
    chunk_size: int


@dataclass(frozen=True, slots=True)
class SnapChunk:
    """Bytes ``offset .. offset + len(data)`` of the offered snapshot; ``crc`` is their CRC32.
    ``data`` may be any bytes-like object when encoding; it decodes as ``bytes``."""

    frm: int
    to: int
    term: int
    index: int
    offset: int
    crc: int
    data: Any


@dataclass(frozen=True, slots=True)
class SnapAck:
    """The receiver's answer (``status``: an ``ACK_*``) about the stream ``(to, term, index)``."""

    frm: int
    to: int
    term: int
    index: int
    status: int
    offset: int


SnapMessage = SnapOffer | SnapChunk | SnapAck


def snap_to_wire(x: SnapMessage) -> list:
    """The msgpack-ready array of one stream message."""
    if type(x) is SnapChunk:
        return [SNAP_CHUNK, x.frm, x.to, x.term, x.index, x.offset, x.crc, x.data]
    if type(x) is SnapAck:
        return [SNAP_ACK, x.frm, x.to, x.term, x.index, x.status, x.offset]
    assert type(x) is SnapOffer
    return [SNAP_OFFER, x.frm, x.to, x.term, x.index, x.snap_term, list(x.voters),
            list(x.learners), x.size, x.crc, x.chunk_size]


def _crc(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= 0xFFFFFFFF:
        raise DecodeError(f"expected a CRC32, got {v!r:.20}")
    return v


def snap_from_wire(w: Any) -> SnapMessage:
    """Check and rebuild one stream message; ``DecodeError`` if malformed."""
    if type(w) is not list or not w:
        raise DecodeError("a stream message is a non-empty array")
    tag = w[0]
    if tag == SNAP_CHUNK and type(tag) is int:
        if len(w) != 8:
            raise DecodeError("a chunk is [1, frm, to, term, index, offset, crc, data]")
        data = _bytes(w[7])
        if len(data) > MAX_SNAP_CHUNK:
            raise DecodeError(f"a chunk of {len(data)} bytes is over {MAX_SNAP_CHUNK}")
        return SnapChunk(_uint(w[1]), _uint(w[2]), _uint(w[3]), _uint(w[4]), _uint(w[5]),
                         _crc(w[6]), data)
    if tag == SNAP_ACK and type(tag) is int:
        if len(w) != 7:
            raise DecodeError("an ack is [2, frm, to, term, index, status, offset]")
        status = _uint(w[5])
        if status > ACK_UNKNOWN:
            raise DecodeError(f"unknown ack status {status}")
        return SnapAck(_uint(w[1]), _uint(w[2]), _uint(w[3]), _uint(w[4]), status,
                       _uint(w[6]))
    if tag == SNAP_OFFER and type(tag) is int:
        if len(w) != 11 or type(w[6]) is not list or type(w[7]) is not list:
            raise DecodeError("an offer is [0, frm, to, term, index, snap_term, [voter...], "
                              "[learner...], size, crc, chunk_size]")
        chunk_size = _uint(w[10])
        if not 0 < chunk_size <= MAX_SNAP_CHUNK:
            raise DecodeError(f"chunk size {chunk_size} is not in 1..{MAX_SNAP_CHUNK}")
        return SnapOffer(_uint(w[1]), _uint(w[2]), _uint(w[3]), _uint(w[4]), _uint(w[5]),
                         tuple(_uint(v) for v in w[6]), tuple(_uint(v) for v in w[7]),
                         _uint(w[8]), _crc(w[9]), chunk_size)
    raise DecodeError(f"unknown stream message tag {tag!r:.20}")


def encode_snap_frame(messages: list) -> bytes:
    """One SNAP frame holding ``messages`` (stream messages for one peer)."""
    return frame(SNAP, [snap_to_wire(x) for x in messages])


def decode_snap_batch(body: list) -> list:
    """The stream messages of a SNAP frame's batch (from ``split_frame``)."""
    return [snap_from_wire(w) for w in body]


# ------------------------------------------------------------------------- client side


def request_id(w: Any) -> int | None:
    """The request id of a request that may be malformed, or None if it has none."""
    if type(w) is list and w and type(w[0]) is int and 0 <= w[0] <= _MAX_INT:
        return w[0]
    return None


def check_request(w: Any) -> tuple[int, int]:
    """Check the header of one client request; return ``(rid, op)``.

    The arguments are checked by the node when it handles the op (``request_args``).
    """
    if type(w) is not list or len(w) < 2:
        raise DecodeError("a request is an array [rid, op, ...]")
    rid, op = w[0], w[1]
    if type(rid) is not int or not 0 <= rid <= _MAX_INT:
        raise DecodeError("a request id is a non-negative int")
    if type(op) is not int or op not in _OPS:
        raise DecodeError(f"unknown op {shown(op)}")
    return rid, op


def keepalive_args(w: list) -> int:
    """The lease id of a KEEPALIVE ``[rid, 8, lease_id]``."""
    if len(w) != 3:
        raise DecodeError("KEEPALIVE is [rid, 8, lease_id]")
    lease_id = _uint(w[2])
    if lease_id == 0:
        raise DecodeError("a lease id is a positive int")
    return lease_id


def stale_write_args(w: list) -> tuple[bytes, bytes | None]:
    """``(key, value)`` of a STALE_WRITE ``[rid, 9, key, value|nil]`` (value None deletes).

    Sizes are checked where the write is recorded (the key-value command's own checks)."""
    if len(w) != 4:
        raise DecodeError("STALE_WRITE is [rid, 9, key, value|nil]")
    return _bytes(w[2]), None if w[3] is None else _bytes(w[3])


def read_args(w: list) -> tuple[bytes, int, bool]:
    """``(key_or_prefix, limit, consistent)`` of a GET ``[rid, 2, key, consistent]`` or a
    RANGE ``[rid, 3, prefix, limit, consistent]``."""
    if w[1] == OP_GET:
        if len(w) != 4:
            raise DecodeError("GET is [rid, 2, key, consistent]")
        return _bytes(w[2]), 0, _bool(w[3])
    if len(w) != 5:
        raise DecodeError("RANGE is [rid, 3, prefix, limit, consistent]")
    return _bytes(w[2]), _uint(w[3]), _bool(w[4])


def reply_from_wire(w: Any) -> tuple[int, int, Any]:
    """Check one reply ``[rid, status, payload]``; the payload is checked by the caller."""
    if type(w) is not list or len(w) != 3:
        raise DecodeError("a reply is an array [rid, status, payload]")
    rid, status = w[0], w[1]
    if type(rid) is not int or type(status) is not int or not ST_OK <= status <= ST_FORBIDDEN:
        raise DecodeError("a reply has an int request id and a known status")
    return rid, status, w[2]


def watch_args(w: list) -> tuple[int, bytes, bool, int]:
    """``(watch_id, key, prefix, from_revision)`` of a WATCH
    ``[rid, 10, watch_id, key, prefix, from_revision]`` (from_revision 0: from now)."""
    if len(w) != 6:
        raise DecodeError("WATCH is [rid, 10, watch_id, key, prefix, from_revision]")
    return _uint(w[2]), _bytes(w[3]), _bool(w[4]), _uint(w[5])


def member_change_args(w: list) -> tuple[ChangeKind, int, str]:
    """``(kind, node, address)`` of a MEMBER_CHANGE ``[rid, 13, kind, node, address]``
    (``address`` ``HOST:PORT`` for an addition, ``""`` otherwise)."""
    from nameservice.raft.types import ChangeKind

    if len(w) != 5:
        raise DecodeError("MEMBER_CHANGE is [rid, 13, kind, node, address]")
    kind, node, address = _uint(w[2]), _uint(w[3]), w[4]
    if kind not in (MEMBER_ADD_LEARNER, MEMBER_PROMOTE, MEMBER_REMOVE):
        raise DecodeError(f"unknown membership change kind {kind}")
    if node == 0:
        raise DecodeError("a node id is a positive int")
    if type(address) is not str or len(address) > 255:
        raise DecodeError("a member's address is a str of at most 255 characters")
    if (kind == MEMBER_ADD_LEARNER) != bool(address):
        raise DecodeError("an addition needs the new member's HOST:PORT; other changes none")
    return ChangeKind(kind), node, address


def watch_cancel_args(w: list) -> int:
    """The watch id of a WATCH_CANCEL ``[rid, 11, watch_id]``."""
    if len(w) != 3:
        raise DecodeError("WATCH_CANCEL is [rid, 11, watch_id]")
    return _uint(w[2])
