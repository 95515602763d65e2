"""Leader changes, as the node's parts need to hear of them.

The Raft core changes role and leader inside its own calls (a message stepped, a tick); the
node looks after each of its steps (``check``) and tells whoever cares, once per change:

* ``on_gained()``: this node became leader (its lease clock starts);
* ``on_lost()``: this node stopped leading (pending writes and reads fail NOT_LEADER);
* ``on_changed(leader, is_leader)``: the leader is another one (``NONE``: none known) —
  parked requests go to the new leader, reads forwarded to the old one are failed.

``term_start`` is the index of the last entry when this node last became leader: until the
state machine has applied it, the new leader may not know every lease yet.
"""
from __future__ import annotations

import logging
from typing import Callable

from nameservice.raft.core import RaftCore
from nameservice.raft.types import NONE, Role

log = logging.getLogger(__name__)

__all__ = ["LeaderTracker"]


class LeaderTracker:
    """Notices the core's leader changes (see module docstring)."""

    def __init__(self, core: RaftCore, *, on_gained: Callable[[], None],
                 on_lost: Callable[[], None],
                 on_changed: Callable[[int, bool], None]) -> None:
        self._core = core
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._on_changed = on_changed
        self.term_start = 0
        """Index of this leader's first entry (the last index when it became leader)."""
        self._leader = NONE
        self._leading = False

    @property
    def leader(self) -> int:
        """The leader as last seen by ``check`` (``NONE``: none known)."""
        return self._leader

    def check(self) -> None:
        """Compare the core's role and leader with what was seen last; tell the listeners."""
        core = self._core
        leader = core.leader
        is_leader = core.role is Role.LEADER
        if is_leader and not self._leading:
            self.term_start = core.last_index
            self._on_gained()
        if self._leading and not is_leader:
            self._on_lost()
        self._leading = is_leader
        if leader != self._leader:
            log.info("term %d: leader is now %s (was %s)", core.term, leader or "unknown",
                     self._leader or "unknown")
            self._leader = leader
            self._on_changed(leader, is_leader)
