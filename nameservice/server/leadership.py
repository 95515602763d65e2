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

import asyncio
import logging
import time
from typing import Callable

from nameservice.raft.core import RaftCore
from nameservice.raft.types import NONE, Role

log = logging.getLogger(__name__)

__all__ = ["LeaderTracker", "hand_over"]


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


async def hand_over(core: RaftCore, step: Callable[[], None], *, tick_s: float,
                    timeout_s: float, what: str = "node") -> bool:
    """A leader that is stopping hands its leadership to the most caught-up voter first, so
    that its group goes on at once instead of after an election timeout: tries each voter in
    turn (``step()`` after each try sends what the core queued) until another one leads, for at
    most ``timeout_s``. Whether another one took it (False at once when this one does not lead
    or is alone). ``what`` names the members in the log lines."""
    if core.role is not Role.LEADER or not core.peers:
        return False
    deadline = time.monotonic() + timeout_s
    tried: set[int] = set()
    while time.monotonic() < deadline:
        if core.role is not Role.LEADER:
            if core.leader not in (NONE, core.id):
                log.info("leadership handed to %s %d", what, core.leader)
                return True
        elif core.transferee == NONE:  # not started yet, or the last attempt was abandoned
            candidates = [p for p in core.peers if p not in tried] or list(core.peers)
            target = max(candidates, key=lambda peer: core.progress[peer].match)
            tried.add(target)
            log.info("stopping: handing leadership to %s %d", what, target)
            core.transfer_leadership(target)
            step()
        await asyncio.sleep(tick_s)
    log.warning("stopping without handing leadership over (no %s took it in %.1f s)", what,
                timeout_s)
    return False
