"""The key-value state machine the Raft-replicated server applies committed entries to.

Pure: no sockets, no clock, no disk, no threads. Same entries in the same order → same state,
same results, same events, byte-identical snapshots, on every replica. Time enters only through
commands (the leader proposes ``LeaseExpire`` when its clock says a lease ran out).

Driving it::

    machine = KvStateMachine(KvConfig())
    for entry in ready.committed:                 # in log order
        applied = machine.apply_entry(entry.index, entry.data)
        reply to the waiting clients with applied.results (one per request of the entry)
        push applied.events to the watchers whose prefix matches
    machine.get(key) / machine.range(prefix)      # reads, after ReadIndex or stale
    machine.events_since(revision, prefix)        # a watcher resuming
    machine.snapshot() / machine.restore(data)    # compaction, InstallSnapshot
"""
from __future__ import annotations

from dataclasses import dataclass

from ..raft.membership import RESERVED_PREFIX
from .codec import decode_command
from .commands import (
    Batch,
    Cas,
    CloseSession,
    Delete,
    DeleteRange,
    LeaseExpire,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    Proposal,
    Put,
    Request,
    StaleWrite,
)
from .errors import DecodeError
from .history import EventHistory
from .keyspace import KeySpace
from .results import (
    Applied,
    Event,
    KeyValue,
    RejectCode,
    Rejected,
    Result,
    SessionClosed,
    SessionOpened,
)
from .sessions import SessionTable
from .snapshot import dump_snapshot, load_snapshot

__all__ = ["KvConfig", "KvStateMachine"]


@dataclass(frozen=True, slots=True)
class KvConfig:
    """Bounds of the state machine.

    The fields above ``history_events`` decide what commands do, so every replica of a cluster
    must use the same values (like the cluster membership); the history bounds are local.
    """

    max_keys: int = 1_000_000
    """Creating a key beyond this many is rejected with TOO_MANY_KEYS."""
    max_leases: int = 100_000
    """Granting a lease beyond this many is rejected with TOO_MANY_LEASES (but see below)."""
    max_leases_per_session: int = 10_000
    """Leases one client session may hold; beyond, TOO_MANY_LEASES (a client's quota)."""
    reserved_leases: int = 10_000
    """Leases beyond ``max_leases`` that only sessions holding fewer than
    ``leases_reserved_floor`` may grant: one client that took every lease locks no one out."""
    leases_reserved_floor: int = 16
    min_lease_ttl_ms: int = 1000
    """A shorter TTL asked for is raised to this."""
    max_sessions: int = 16_384
    """Beyond this many sessions the least recently used one expires."""
    session_window: int = 4096
    """Results remembered per session; must exceed the requests a client has in flight."""
    max_cached_results: int = 262_144
    """Results remembered over all sessions; beyond, least recently used sessions expire."""
    history_events: int = 10_000
    """Events kept for ``events_since`` (local)."""
    history_bytes: int = 64 << 20
    """Approximate bytes of events kept for ``events_since`` (local)."""


class KvStateMachine:
    """Keys with revisions, leases, client sessions and a watch history (see module doc)."""

    def __init__(self, config: KvConfig | None = None) -> None:
        self.config = config = config or KvConfig()
        self._space = self._new_space()
        self._sessions = self._new_sessions()
        self._history = EventHistory(config.history_events, config.history_bytes)
        self.applied_index = 0
        """Index of the last log entry applied (or covered by the restored snapshot)."""
        # Local counters for operators; not part of the replicated state or snapshots.
        self.duplicates = 0
        self.malformed = 0
        self.stale_conflicts = 0
        self.leases_refused = 0

    def _new_space(self) -> KeySpace:
        c = self.config
        return KeySpace(c.max_keys, c.max_leases, c.min_lease_ttl_ms,
                        max_leases_per_owner=c.max_leases_per_session,
                        reserved_leases=c.reserved_leases,
                        reserved_floor=c.leases_reserved_floor)

    def _new_sessions(self) -> SessionTable:
        c = self.config
        return SessionTable(c.max_sessions, c.session_window, c.max_cached_results)

    # --- reads -----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store revision: the number of key changes ever applied."""
        return self._space.revision

    def get(self, key: bytes | str) -> KeyValue | None:
        """The current key-value of ``key``, None if absent."""
        return self._space.get(_as_bytes(key))

    def range(self, prefix: bytes | str = b"", limit: int = 0) -> list[KeyValue]:
        """Key-values under ``prefix`` sorted by key (at most ``limit`` when > 0)."""
        return self._space.range(_as_bytes(prefix), limit)

    def leases(self) -> dict[int, int]:
        """Every lease: id → TTL in ms (the leader builds its expiry deadlines from this)."""
        return {lease.id: lease.ttl_ms for lease in self._space.leases.values()}

    def has_lease(self, lease_id: int) -> bool:
        """Whether lease ``lease_id`` exists."""
        return lease_id in self._space.leases

    def lease_ttl_ms(self, lease_id: int) -> int | None:
        """The TTL of lease ``lease_id`` in ms; None if it does not exist."""
        lease = self._space.leases.get(lease_id)
        return None if lease is None else lease.ttl_ms

    def lease_keys(self, lease_id: int) -> list[bytes] | None:
        """The keys attached to a lease, sorted; None if the lease does not exist."""
        lease = self._space.leases.get(lease_id)
        return None if lease is None else sorted(lease.keys)

    def events_since(self, revision: int, prefix: bytes | str = b"") -> list[Event]:
        """Events with revision >= ``revision`` under ``prefix``, in order.

        Raises ``Compacted`` if some were dropped from the history; the watcher then resyncs
        (docs/kv.md, "Watch resume").
        """
        return self._history.since(revision, _as_bytes(prefix))

    @property
    def oldest_event_revision(self) -> int:
        """The oldest revision ``events_since`` can serve."""
        return self._history.oldest

    def stats(self) -> dict[str, int]:
        """Sizes and counters for status pages."""
        return {
            "applied_index": self.applied_index,
            "revision": self._space.revision,
            "keys": len(self._space.kvs),
            "leases": len(self._space.leases),
            "sessions": len(self._sessions),
            "cached_results": self._sessions.cached_results,
            "sessions_evicted": self._sessions.evicted,
            "history_events": len(self._history),
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "stale_conflicts": self.stale_conflicts,
            "leases_refused": self.leases_refused,
        }

    # --- applying --------------------------------------------------------------------------

    def apply_entry(self, index: int, data: bytes) -> Applied:
        """Apply the log entry ``index`` holding ``data`` (an encoded command).

        Empty data (a leader's no-op) and the Raft core's own entries (configuration changes:
        data starting with ``RESERVED_PREFIX``) only advance the applied index. Data that does
        not decode is counted and answered with one MALFORMED result; it changes nothing.
        """
        if index <= self.applied_index:
            return Applied(index, (), ())
        if not data or data[:1] == RESERVED_PREFIX:
            self.applied_index = index
            return Applied(index, (), ())
        try:
            proposal = decode_command(data)
        except DecodeError as exc:
            self.malformed += 1
            self.applied_index = index
            return Applied(index, (Rejected(RejectCode.MALFORMED, str(exc)),), ())
        return self.apply(index, proposal)

    def apply(self, index: int, proposal: Proposal) -> Applied:
        """Apply a decoded command, request or batch as log entry ``index``.

        An index at or below ``applied_index`` is already in the state: it is ignored and
        gives no results.
        """
        if index <= self.applied_index:
            return Applied(index, (), ())
        events: list[Event] = []
        if type(proposal) is Batch:
            apply_item = self._apply_item
            results = [apply_item(item, events) for item in proposal.items]
        else:
            results = [self._apply_item(proposal, events)]
        self.applied_index = index
        if events:
            self._history.extend(events)
        return Applied(index, results, events)

    def _apply_item(self, item: object, events: list[Event]) -> Result:
        if type(item) is not Request:
            return self._execute(item, events)
        sessions = self._sessions
        session = sessions.touch(item.client_id)
        if session is None:
            return Rejected(
                RejectCode.SESSION_EXPIRED, f"session {item.client_id} is unknown or expired"
            )
        if item.ack:
            sessions.forget_through(session, item.ack)
        seq = item.seq
        cached = session.results.get(seq)
        if cached is not None:
            self.duplicates += 1
            return cached
        if seq <= session.floor:
            return Rejected(
                RejectCode.SEQ_TOO_OLD,
                f"seq {seq} of session {item.client_id} is at or below its floor {session.floor}",
            )
        result = self._execute(item.command, events, item.client_id)
        sessions.record(session, seq, result)
        return result

    def _execute(self, cmd: object, events: list[Event], client_id: int = 0) -> Result:
        space = self._space
        if type(cmd) is Put:
            return space.put(cmd.key, cmd.value, cmd.lease, cmd.prev_kv, events)
        if type(cmd) is Cas:
            current = space.kvs.get(cmd.key)
            if cmd.expect_value is not None:
                holds = current is not None and current.value == cmd.expect_value
            elif cmd.expect_mod_revision is not None:
                holds = (current.mod_revision if current else 0) == cmd.expect_mod_revision
            else:
                holds = current is None
            return space.compare_and_swap(cmd.key, cmd.value, holds, current, cmd.lease, events)
        if type(cmd) is Delete:
            return space.delete(cmd.key, events)
        if type(cmd) is DeleteRange:
            return space.delete_range(cmd.prefix, events)
        if type(cmd) is StaleWrite:
            current = space.kvs.get(cmd.key)
            holds = (current.mod_revision if current else 0) == cmd.base_mod_revision
            if not holds:
                self.stale_conflicts += 1
            return space.compare_and_swap(cmd.key, cmd.value, holds, current, 0, events)
        if type(cmd) is LeaseGrant:
            result = space.grant(cmd.id, cmd.ttl_ms, client_id)
            if type(result) is Rejected and result.code is RejectCode.TOO_MANY_LEASES:
                self.leases_refused += 1
            return result
        if type(cmd) is LeaseRevoke or type(cmd) is LeaseExpire:
            return space.revoke(cmd.id, events)
        if type(cmd) is OpenSession:
            return SessionOpened(self._sessions.open())
        if type(cmd) is CloseSession:
            return SessionClosed(self._sessions.close(cmd.client_id))
        raise TypeError(f"not a command: {type(cmd).__name__}")

    # --- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The replicated state (keys, revision, leases, sessions, applied index) as bytes."""
        return dump_snapshot(self.applied_index, self._space, self._sessions)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; the event history restarts empty.

        Raises ``DecodeError`` (and changes nothing) if ``data`` is not a valid snapshot.
        """
        space, sessions = self._new_space(), self._new_sessions()
        applied_index = load_snapshot(data, space, sessions)
        self._space, self._sessions = space, sessions
        self.applied_index = applied_index
        self._history.reset(space.revision)


def _as_bytes(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key
