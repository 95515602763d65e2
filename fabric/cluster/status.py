"""A network's status: what it asks for against what the agents run (``fabric network
status``, ``fabric deploy --wait``)."""
from __future__ import annotations

from typing import Any

from fabric.cluster import keys
from fabric.cluster.manager import UNPLACED, View

__all__ = ["list_networks", "network_status", "status_from_view"]


def status_from_view(kvs: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The status of network ``name`` from the key-values under ``cluster/``; None if it is
    not deployed and nothing of it runs.

    ``instances``: one row per instance asked for or still placed or running: ``id``,
    ``host``, ``gen``, ``state`` (the agent's report of that incarnation; ``placed`` before
    any, ``unplaced``, ``lost`` when its host's agent is gone and it has no new host yet,
    ``stopping`` for what is no longer asked for), ``note``.
    ``settled``: every instance asked for runs its current incarnation and nothing else of
    the network is left."""
    networks, agents, placements, running = View().read(kvs)
    network = networks.get(name)
    unplaced_kv = kvs.get(UNPLACED + name)
    unplaced = (keys.decode(unplaced_kv.value) or {}) if unplaced_kv else {}
    asked = [spec.id for spec in network.instances] if network else []
    digests = {spec.id: spec.digest for spec in network.instances} if network else {}
    ids = list(asked)
    ids += sorted({i for (n, i) in placements if n == name} - set(asked))
    ids += sorted({i for (_h, n, i) in running if n == name} - set(ids))
    if network is None and not ids:
        return None
    rows, settled, count = [], True, 0
    for ident in ids:
        found = placements.get((name, ident))
        p = found[0] if found else None
        reports = [r for (h, n, i), r in running.items() if n == name and i == ident]
        mine = next((r for r in reports if p and r.host == p.host and r.gen == p.gen), None)
        row: dict[str, Any] = {"id": ident, "host": p.host if p else "", "gen": p.gen if p else 0,
               "state": mine.state if mine else "placed" if p else "unplaced", "note": ""}
        if ident not in asked:
            row["state"], row["note"] = "stopping", "no longer asked for"
            settled = False
        elif p is None:
            row["note"] = str(unplaced.get(ident, "waiting for the manager"))
            settled = False
        elif p.host not in agents:
            row["state"] = "lost"
            row["note"] = f"host {p.host} lost; " + str(unplaced.get(ident, "placing again"))
            settled = False
        else:
            if p.previous:
                row["note"] = f"replacing gen {p.previous['gen']} on {p.previous['host']}"
            elif mine and mine.detail and mine.state != "running":
                row["note"] = mine.detail
            stale = [r for r in reports if r is not mine]
            if stale:
                row["note"] = (row["note"] + "; " if row["note"] else "") + ", ".join(
                    f"gen {r.gen} {r.state} on {r.host}" for r in stale)
            outdated = p.digest != digests[ident]
            if outdated:
                row["note"] = (row["note"] + "; " if row["note"] else "") + "update pending"
            if mine and mine.state == "running":
                count += 1
            if not (mine and mine.state == "running") or p.previous or stale or outdated:
                settled = False
        rows.append(row)
    return {"network": name, "deployed": network is not None, "instances": rows,
            "running": count, "settled": settled and network is not None}


async def network_status(client: Any, name: str, *, removed_ok: bool = False
                         ) -> dict[str, Any] | None:
    """The status of network ``name`` read now (a linearizable range of ``cluster/``); with
    ``removed_ok``, an empty status instead of None for a network gone entirely."""
    kvs = {kv.key.decode(errors="replace"): kv for kv in await client.range(keys.ROOT)}
    found = status_from_view(kvs, name)
    if found is None and removed_ok:
        return {"network": name, "deployed": False, "instances": [], "running": 0,
                "settled": False}
    return found


async def list_networks(client: Any) -> list[dict[str, Any]]:
    """One row per deployed network: its name, instances asked for, running, settled."""
    kvs = {kv.key.decode(errors="replace"): kv for kv in await client.range(keys.ROOT)}
    names = sorted(k[len(keys.NETWORKS):] for k in kvs if k.startswith(keys.NETWORKS))
    rows = []
    for name in names:
        found = status_from_view(kvs, name)
        if found is not None:
            rows.append({"network": name, "instances": len(found["instances"]),
                         "running": found["running"], "settled": found["settled"]})
    return rows
