"""The replicated data: keys with revisions, and leases with their attached keys.

Revision rule: the store revision starts at 0 and goes up by exactly one for every key changed
(created, updated or deleted). A command that changes n keys (a DeleteRange, a lease revoke)
takes n revisions, one per key in key order; a command that changes nothing takes none. So every
revision names exactly one change, and the events of revisions ``a..b`` are exactly the changes
made between them.

Each write method appends the events it causes to the ``events`` list it is given and returns
the result for the client. Nothing is copied: stored ``KeyValue`` objects are immutable and are
shared with results and events.
"""
from __future__ import annotations

from typing import Iterator

from sortedcontainers import SortedList

from .results import (
    CasResult,
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    PutResult,
    RejectCode,
    Rejected,
    Result,
)

__all__ = ["KeySpace", "Lease", "prefix_end"]

_PUT = EventType.PUT
_DELETE = EventType.DELETE


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``; None if unbounded."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class Lease:
    """A lease: its TTL, the client session that granted it (0: none) and the keys attached
    to it (mutable; owned by the ``KeySpace``)."""

    __slots__ = ("id", "ttl_ms", "owner", "keys")

    def __init__(self, lease_id: int, ttl_ms: int, owner: int = 0) -> None:
        self.id = lease_id
        self.ttl_ms = ttl_ms
        self.owner = owner
        self.keys: set[bytes] = set()


class KeySpace:
    """Keys → ``KeyValue``, a sorted key index for ranges, leases, and the revision."""

    def __init__(self, max_keys: int, max_leases: int, min_lease_ttl_ms: int, *,
                 max_leases_per_owner: int = 10_000, reserved_leases: int = 10_000,
                 reserved_floor: int = 16) -> None:
        self.max_keys = max_keys
        self.max_leases = max_leases
        self.min_lease_ttl_ms = min_lease_ttl_ms
        self.max_leases_per_owner = max_leases_per_owner
        self.reserved_leases = reserved_leases
        self.reserved_floor = reserved_floor
        self.owned: dict[int, int] = {}
        """Leases held per owning session (only owners holding some)."""
        self.revision = 0
        self.last_lease_id = 0
        self.kvs: dict[bytes, KeyValue] = {}
        self.sorted_keys: SortedList = SortedList()
        self.leases: dict[int, Lease] = {}

    # --- reads ---

    def get(self, key: bytes) -> KeyValue | None:
        """The key's current key-value, None if absent."""
        return self.kvs.get(key)

    def range(self, prefix: bytes = b"", limit: int = 0) -> list[KeyValue]:
        """Key-values of the keys starting with ``prefix``, sorted by key; at most ``limit``
        of them when ``limit`` > 0."""
        kvs = self.kvs
        keys = self._keys_with_prefix(prefix)
        if limit > 0:
            out = []
            for key in keys:
                out.append(kvs[key])
                if len(out) >= limit:
                    break
            return out
        return [kvs[key] for key in keys]

    def _keys_with_prefix(self, prefix: bytes) -> Iterator[bytes]:
        if not prefix:
            return iter(self.sorted_keys)
        end = prefix_end(prefix)
        keys: Iterator[bytes]  # sortedcontainers has no type information
        if end is None:
            keys = self.sorted_keys.irange(minimum=prefix)
        else:
            keys = self.sorted_keys.irange(prefix, end, inclusive=(True, False))
        return keys

    # --- writes ---

    def put(
        self, key: bytes, value: bytes, lease: int, want_prev: bool, events: list[Event]
    ) -> Result:
        """Set a key (see ``commands.Put``)."""
        prev = self.kvs.get(key)
        if lease and lease not in self.leases:
            return Rejected(RejectCode.LEASE_NOT_FOUND, f"lease {lease} does not exist")
        if prev is None and len(self.kvs) >= self.max_keys:
            return Rejected(RejectCode.TOO_MANY_KEYS, f"the store holds {self.max_keys} keys")
        self._write(key, value, lease, prev, events)
        return PutResult(self.revision, prev if want_prev else None)

    def delete(self, key: bytes, events: list[Event]) -> DeleteResult:
        """Delete a key if present."""
        prev = self.kvs.get(key)
        if prev is None:
            return DeleteResult(self.revision, 0)
        self._remove(prev, events)
        return DeleteResult(self.revision, 1)

    def delete_range(self, prefix: bytes, events: list[Event]) -> DeleteResult:
        """Delete every key starting with ``prefix``, in key order."""
        kvs = self.kvs
        doomed = [kvs[key] for key in self._keys_with_prefix(prefix)]
        for kv in doomed:
            self._remove(kv, events)
        return DeleteResult(self.revision, len(doomed))

    def compare_and_swap(
        self,
        key: bytes,
        value: bytes | None,
        holds: bool,
        current: KeyValue | None,
        lease: int,
        events: list[Event],
    ) -> Result:
        """Write ``value`` (delete when None) if ``holds``; ``current`` is the key now."""
        if not holds:
            return CasResult(False, self.revision, current)
        if value is None:
            if current is not None:
                self._remove(current, events)
            return CasResult(True, self.revision, None)
        if lease and lease not in self.leases:
            return Rejected(RejectCode.LEASE_NOT_FOUND, f"lease {lease} does not exist")
        if current is None and len(self.kvs) >= self.max_keys:
            return Rejected(RejectCode.TOO_MANY_KEYS, f"the store holds {self.max_keys} keys")
        kv = self._write(key, value, lease, current, events)
        return CasResult(True, self.revision, kv)

    def grant(self, lease_id: int, ttl_ms: int, owner: int = 0) -> Result:
        """Create a lease (id 0: the next unused id) for the session ``owner`` (0: none).

        Quotas: an owner holds at most ``max_leases_per_owner``; once ``max_leases`` exist,
        only an owner holding fewer than ``reserved_floor`` may grant, up to
        ``reserved_leases`` more, so one client that took them all locks no one else out.
        """
        held = self.owned.get(owner, 0) if owner else self.reserved_floor
        if held >= self.max_leases_per_owner:
            return Rejected(RejectCode.TOO_MANY_LEASES,
                            f"too many leases for this client: session {owner} holds {held}")
        total = len(self.leases)
        if total >= self.max_leases and (held >= self.reserved_floor
                                         or total >= self.max_leases + self.reserved_leases):
            return Rejected(RejectCode.TOO_MANY_LEASES, f"{total} leases exist")
        if lease_id == 0:
            lease_id = self.last_lease_id + 1
            while lease_id in self.leases:
                lease_id += 1
        elif lease_id in self.leases:
            return Rejected(RejectCode.LEASE_EXISTS, f"lease {lease_id} already exists")
        self.last_lease_id = max(self.last_lease_id, lease_id)
        ttl_ms = max(ttl_ms, self.min_lease_ttl_ms)
        self.leases[lease_id] = Lease(lease_id, ttl_ms, owner)
        if owner:
            self.owned[owner] = self.owned.get(owner, 0) + 1
        return LeaseGrantResult(lease_id, ttl_ms, self.revision)

    def revoke(self, lease_id: int, events: list[Event]) -> LeaseRevokeResult:
        """Remove a lease and delete its keys in key order."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return LeaseRevokeResult(False, 0, self.revision)
        if lease.owner:
            left = self.owned[lease.owner] - 1
            if left:
                self.owned[lease.owner] = left
            else:
                del self.owned[lease.owner]
        kvs = self.kvs
        for key in sorted(lease.keys):
            self._remove(kvs[key], events, detach=False)
        return LeaseRevokeResult(True, len(lease.keys), self.revision)

    # --- the two primitives every change goes through ---

    def _write(
        self, key: bytes, value: bytes, lease: int, prev: KeyValue | None, events: list[Event]
    ) -> KeyValue:
        self.revision = revision = self.revision + 1
        if prev is None:
            kv = KeyValue(key, value, revision, revision, 1, lease)
            self.sorted_keys.add(key)
            if lease:
                self.leases[lease].keys.add(key)
        else:
            kv = KeyValue(key, value, prev.create_revision, revision, prev.version + 1, lease)
            if prev.lease != lease:
                if prev.lease:
                    self.leases[prev.lease].keys.discard(key)
                if lease:
                    self.leases[lease].keys.add(key)
        self.kvs[key] = kv
        events.append(Event(_PUT, kv, prev))
        return kv

    def _remove(self, prev: KeyValue, events: list[Event], detach: bool = True) -> None:
        self.revision = revision = self.revision + 1
        key = prev.key
        del self.kvs[key]
        self.sorted_keys.remove(key)
        if detach and prev.lease:
            self.leases[prev.lease].keys.discard(key)
        events.append(Event(_DELETE, KeyValue(key, b"", 0, revision, 0, 0), prev))
