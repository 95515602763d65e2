"""Errors the Raft core raises to its driver (never for peer input, which is counted and dropped).

    RaftError                    (a ``nameservice.errors.NameServiceError``)
    ├── NotLeader(leader_hint)   the call needs the leader; ``leader_hint`` is 0 when unknown
    └── ProposalDropped(reason)  the leader refused a proposal (transfer under way, log full,
                                 a configuration change it may not make now)
"""
from __future__ import annotations

from nameservice.errors import NameServiceError


class RaftError(NameServiceError):
    """Root of the Raft core's errors."""


class NotLeader(RaftError):
    """This node is not the leader; ``leader_hint`` names the leader it knows of, or 0."""

    def __init__(self, leader_hint: int):
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalDropped(RaftError):
    """The leader did not accept the proposal; nothing was appended."""

    def __init__(self, reason: str):
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason
