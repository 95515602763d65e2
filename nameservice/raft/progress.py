"""What a leader knows about each follower's log, and how fast it may send to it.

A follower is in one of three states (as in etcd's raft):
PROBE      — its match is unknown; send one AppendRequest and wait for the answer.
REPLICATE  — it is keeping up; stream entries optimistically, up to a window of messages.
SNAPSHOT   — it needs a snapshot; send nothing else until it answers.
"""
from __future__ import annotations

from collections import deque

PROBE = 0
REPLICATE = 1
SNAPSHOT = 2


class Progress:
    """Replication state of one follower, kept by the leader."""

    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "pending_snapshot",
        "snapshot_elapsed",
        "recent_active",
        "sent_commit",
    )

    def __init__(self, next_index: int, max_inflight: int):
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        # Last index of every AppendRequest sent but not yet acknowledged (REPLICATE only).
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = True
        self.sent_commit = 0

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.inflight.clear()

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        """Record that the follower matches up to ``index``; True if that is news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def free_inflight(self, index: int) -> None:
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejection of the AppendRequest whose prev_index was ``rejected``.

        Returns False when the rejection is stale (answers an older message).
        """
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True
