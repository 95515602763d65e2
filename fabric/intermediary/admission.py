"""Which keys may send frames to an intermediary, in a process with keys (docs/security.md).

A producer's frames (its routing id starts with ``PRODUCER_PREFIX``) need the sender's key to
have the ``produce`` right on the channel, a consumer's the ``consume`` right; anything else an
allowed key. A refused frame is dropped, counted (``forbidden_frames``) and logged once per key
and role (the first 1,000).
"""
from __future__ import annotations

import logging

import zmq

from fabric.intermediary.peers import CONSUMER_PREFIX, PRODUCER_PREFIX, IntermediaryStats
from nameservice.security.context import Security

log = logging.getLogger(__name__)

__all__ = ["Admission"]

MAX_LOGGED = 1000


class Admission:
    """The rights check of one intermediary's frames."""

    def __init__(self, channel: str, security: Security, stats: IntermediaryStats) -> None:
        self._channel = channel
        self._security = security
        self._stats = stats
        self._logged: set[tuple[str, bytes]] = set()

    def admits(self, rid: bytes, last: zmq.Frame) -> bool:
        """Whether the frame ``last`` from routing id ``rid`` may be handled."""
        rule = self._security.sender(last)
        kind = rid[:1]
        if rule is not None:
            if kind == PRODUCER_PREFIX:
                allowed = rule.may_channel("produce", self._channel)
            elif kind == CONSUMER_PREFIX:
                allowed = rule.may_channel("consume", self._channel)
            else:
                allowed = True
            if allowed:
                return True
        self._stats.forbidden_frames += 1
        who = f"{rule.identity} ({rule.key.decode()})" if rule is not None else "an unknown key"
        if (who, kind) not in self._logged and len(self._logged) < MAX_LOGGED:
            self._logged.add((who, kind))
            log.warning("refused frames from %s: no right to %s on channel %s", who,
                        "produce" if kind == PRODUCER_PREFIX else "consume", self._channel)
        return False
