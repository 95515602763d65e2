"""Snapshot encoding of the replicated state: keys, revision, leases and sessions.

Layout: the version byte, then one msgpack array
``[applied_index, revision, last_lease_id, kvs, leases, sessions]`` where ``kvs`` lists every
key-value as ``[key, value, create_revision, mod_revision, version, lease]`` in key order,
``leases`` lists ``[id, ttl_ms]``, or ``[id, ttl_ms, owner]`` for a lease granted in a client
session (``owner``: its client id), in id order (attached keys follow from ``kvs``), and
``sessions`` is ``[last_client_id, [[client_id, floor, [[seq, result], ...]], ...]]`` with
sessions least recently used first and results in applied order. Everything is in an order fixed
by the applied commands alone, so replicas that applied the same log produce the same bytes. The
event history is not included.
"""
from __future__ import annotations

from typing import Any, cast

import msgpack
from sortedcontainers import SortedList

from .codec import FORMAT_VERSION, kv_to_wire, result_from_wire, result_to_wire
from .commands import MAX_KEY_BYTES, MAX_VALUE_BYTES
from .errors import DecodeError
from .keyspace import KeySpace, Lease
from .results import KeyValue
from .sessions import SessionTable

__all__ = ["dump_snapshot", "load_snapshot"]

_PREFIX = bytes([FORMAT_VERSION])


def dump_snapshot(applied_index: int, space: KeySpace, sessions: SessionTable) -> bytes:
    """The bytes of a snapshot of ``space`` and ``sessions`` as of ``applied_index``."""
    kvs = space.kvs
    wire = [
        applied_index,
        space.revision,
        space.last_lease_id,
        [kv_to_wire(kvs[key]) for key in space.sorted_keys],
        [_lease_to_wire(space.leases[lease_id]) for lease_id in sorted(space.leases)],
        sessions.to_wire(result_to_wire),
    ]
    packed: bytes = msgpack.packb(wire, use_bin_type=True)
    return _PREFIX + packed


def load_snapshot(data: bytes, space: KeySpace, sessions: SessionTable) -> int:
    """Fill the empty ``space`` and ``sessions`` from snapshot bytes; return the applied index.

    Raises ``DecodeError`` if the bytes are not a consistent snapshot.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 2:
        raise DecodeError("snapshot: too short or not bytes")
    if data[0] != FORMAT_VERSION:
        raise DecodeError(f"snapshot: unknown format version {data[0]}")
    try:
        wire = msgpack.unpackb(memoryview(data)[1:], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds on garbage; all mean the same here
        raise DecodeError(f"snapshot: not valid msgpack ({exc})") from exc
    try:
        return _load(wire, space, sessions)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise DecodeError(f"snapshot: inconsistent ({exc})") from exc


def _load(wire: Any, space: KeySpace, sessions: SessionTable) -> int:
    applied_index, revision, last_lease_id, kvs_wire, leases_wire, sessions_wire = wire
    for number in (applied_index, revision, last_lease_id):
        _require(type(number) is int and number >= 0, "counters are non-negative ints")
    leases: dict[int, Lease] = {}
    owned: dict[int, int] = {}
    for lease_wire in leases_wire:
        _require(type(lease_wire) is list and len(lease_wire) in (2, 3), "bad lease")
        lease_id, ttl_ms, owner = (*lease_wire, 0)[:3]
        _require(type(lease_id) is int and 0 < lease_id <= last_lease_id, "bad lease id")
        _require(type(ttl_ms) is int and ttl_ms > 0, "bad lease ttl")
        _require(type(owner) is int and owner >= 0, "bad lease owner")
        _require(lease_id not in leases, "repeated lease")
        leases[lease_id] = Lease(lease_id, ttl_ms, owner)
        if owner:
            owned[owner] = owned.get(owner, 0) + 1
    kvs: dict[bytes, KeyValue] = {}
    keys: list[bytes] = []
    previous = b""
    for key, value, create, mod, version, lease in kvs_wire:
        _require(type(key) is bytes and 0 < len(key) <= MAX_KEY_BYTES, "bad key")
        _require(not keys or key > previous, "keys out of order")
        _require(type(value) is bytes and len(value) <= MAX_VALUE_BYTES, "bad value")
        for number in (create, mod, version):
            _require(type(number) is int, "revisions are ints")
        _require(1 <= create <= mod <= revision and version >= 1, "bad revisions")
        _require(type(lease) is int and (lease == 0 or lease in leases), "unknown lease")
        kvs[key] = KeyValue(key, value, create, mod, version, lease)
        if lease:
            leases[lease].keys.add(key)
        keys.append(key)
        previous = key
    sessions.load_wire(sessions_wire, result_from_wire)
    space.revision = revision
    space.last_lease_id = last_lease_id
    space.kvs = kvs
    space.sorted_keys = SortedList(keys)
    space.leases = leases
    space.owned = owned
    return cast(int, applied_index)  # checked above


def _lease_to_wire(lease: Lease) -> list[int]:
    # The owner only when there is one: snapshots without owners keep their old bytes.
    return [lease.id, lease.ttl_ms, lease.owner] if lease.owner else [lease.id, lease.ttl_ms]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DecodeError(f"snapshot: {message}")
