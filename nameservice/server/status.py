"""The status report of a node: what ``fabric ns status`` shows."""
from __future__ import annotations

from typing import Any

from nameservice.security.context import current as security


def status_report(node: Any) -> dict:
    """Role, term, leader, indexes, state-machine sizes and every counter of ``node``."""
    core = node.core
    counters = dict(node.counters)
    if node.transport is not None:
        counters["peer_send_drops"] = node.transport.peer_drops
        counters["reply_drops"] = node.transport.reply_drops
    counters.update(core.counters)
    counters.update(node.watches.counters)
    stats = node.machine.stats()
    conf = core.conf_state
    lag = {}
    if core.progress and core.role.value == "leader":
        lag = {str(peer): core.last_index - pr.match for peer, pr in core.progress.items()}
    counters["leases_refused"] = stats["leases_refused"]
    counters["session_quota_refused"] = node.intake.sessions.refused
    if node.intake.guard is not None:
        counters.update(node.intake.guard.counters)
    return {
        "voters": list(conf.voters), "learners": list(conf.learners), "lag": lag,
        "id": node.settings.id, "address": node.settings.address, "role": core.role.value,
        "term": core.term, "leader": core.leader, "leader_address": node.leader_address(),
        "commit_index": core.commit_index, "applied_index": node.machine.applied_index,
        "last_index": core.last_index, "revision": node.machine.revision,
        "keys": stats["keys"], "leases": stats["leases"],
        "watches": len(node.watches), "counters": counters, "stale": node.stale.status(),
        "snapshot_stream": node.snapshots.status(), "security": security().status(),
    }
