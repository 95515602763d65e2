"""The leader tracker alone: each change of role or leader told once."""
from __future__ import annotations

from types import SimpleNamespace

from nameservice.raft.types import NONE, Role
from nameservice.server.leadership import LeaderTracker


def test_each_leader_change_is_told_once_and_a_new_leader_notes_its_first_index():
    core = SimpleNamespace(role=Role.FOLLOWER, leader=NONE, term=1, last_index=0)
    heard: list = []
    tracker = LeaderTracker(core, on_gained=lambda: heard.append("gained"),
                            on_lost=lambda: heard.append("lost"),
                            on_changed=lambda leader, me: heard.append((leader, me)))
    tracker.check()
    assert heard == []
    core.role, core.leader, core.term, core.last_index = Role.LEADER, 1, 2, 7
    tracker.check()
    tracker.check()
    assert heard == ["gained", (1, True)] and tracker.term_start == 7
    core.role, core.leader, core.term = Role.FOLLOWER, NONE, 3
    tracker.check()
    assert heard[2:] == ["lost", (NONE, False)]
    core.leader = 3
    tracker.check()
    assert heard[4:] == [(3, False)] and tracker.leader == 3
