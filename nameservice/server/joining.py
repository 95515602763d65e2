"""``--join``: what a node joining a running cluster learns before it starts.

The operator first adds the node (``fabric ns member add ID HOST:PORT``: it becomes a learner);
the node then starts with the address of any member. It asks that member for the configuration
(a MEMBERS request) and starts knowing every member's address and who votes, itself a learner.
From there the leader sends it the log (or a snapshot), which carries the configuration in
force from then on; the node promotes to voter when the operator (or ``member add`` without
``--learner``) promotes it.

A restarted node may join again the same way: its own log then says which configuration is in
force, and the answer only tells it where the members listen now.
"""
from __future__ import annotations

import asyncio

from nameservice.address import parse_addresses
from nameservice.errors import ConfigError

JOIN_TIMEOUT_S = 30.0
"""How long a joining node keeps asking before it gives up."""


async def ask_members(addresses: list[str], timeout: float) -> dict:
    """The MEMBERS answer of the cluster at ``addresses`` (``Unavailable`` after ``timeout``)."""
    from nameservice.client.api import NameServiceClient

    async with NameServiceClient(addresses, timeout=timeout,
                                 attempt_timeout=min(1.0, timeout)) as client:
        return await client.members()


def members_to_join(join: str, node_id: int, listen: str,
                    timeout: float = JOIN_TIMEOUT_S) -> tuple[dict[int, str], tuple[int, ...]]:
    """``(id -> address of every member, the learners)`` for node ``node_id`` joining through
    ``join`` (``HOST:PORT,...``) to listen at ``listen``. ``ConfigError`` if the cluster does not
    list the node, or lists it elsewhere; ``Unavailable`` if no member answers in time."""
    addresses = parse_addresses(join)
    payload = asyncio.run(ask_members(addresses, timeout))
    rows = [r for r in payload["members"] if isinstance(r, dict)]
    me = [r for r in rows if r.get("id") == node_id]
    if not me:
        raise ConfigError(f"node {node_id} is not a member of the cluster at {join}: add it "
                          f"first with `fabric ns member add {node_id} {listen}`")
    if me[0].get("address") != listen:
        raise ConfigError(f"node {node_id} is a member listening at {me[0].get('address')}, "
                          f"not {listen}")
    members = {r["id"]: r["address"] for r in rows if r.get("address")}
    learners = tuple(sorted(r["id"] for r in rows if r.get("role") == "learner"))
    return members, learners
