"""One replica of a task queue, in this process: a ``GroupReplica`` whose machine is the
``QueueState`` and whose work is the ``QueueFront``.

    replica = QueueReplica(names, name="jobs", data_dir="/var/lib/jobs-1")
    await replica.run(stop)

Its replicas register as ``queue/<name>`` (``queue_name``), each with the address its front
serves on (``serve`` in the meta): clients and workers find the queue there. Workers register
as ``queue/<name>/workers`` (``workers_name``), with their types and versions in the meta; the
leader dispatches only to workers registered there.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import zmq
import zmq.asyncio

from fabric.stateful.group import GroupMember
from fabric.stateful.groupreplica import GroupRecord, GroupReplica
from fabric.stateful.seats import GRACE_S
from fabric.tasks.front import SNDHWM, QueueFront
from fabric.tasks.protocol import queue_name, workers_name
from fabric.tasks.state import QueueState
from nameservice.names import Names
from nameservice.raft.types import NONE

log = logging.getLogger(__name__)

__all__ = ["QueueReplica", "queue_name", "workers_name"]

LEASE_S = 10.0
"""A running attempt's lease: a worker silent this long has lost its attempts."""
RETRY_S = 0.5


class QueueReplica:
    """One replica of the queue ``name`` (see module docstring)."""

    def __init__(self, names: Names, *, name: str, data_dir: str, size: int = 3,
                 listen_host: str = "127.0.0.1", lease_s: float = LEASE_S,
                 election_timeout_ms: tuple[int, int] = (150, 300),
                 snapshot_threshold: int = 10_000, sync_mode: str = "auto",
                 grace_s: float = GRACE_S, state: QueueState | None = None) -> None:
        self.names = names
        self.name = name
        self.lease_s = lease_s
        self.listen_host = listen_host
        self.state = state or QueueState()
        self.front: QueueFront | None = None
        self.serve = ""
        self.workers: dict[str, dict[str, Any]] = {}  # worker id -> its registration's meta
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self.group = GroupReplica(
            self.state, names, group=queue_name(name), data_dir=data_dir, work=self._make_work,
            size=size, listen=f"{listen_host}:0", election_timeout_ms=election_timeout_ms,
            snapshot_threshold=snapshot_threshold, sync_mode=sync_mode, grace_s=grace_s)
        self.ready = self.group.ready

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 10.0) -> None:
        """Serve until ``stop`` is set; a leader lets what it proposed be applied and hands
        over before it deregisters."""
        ctx = self._ctx = zmq.asyncio.Context()
        sock = self._sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.setsockopt(zmq.RCVHWM, SNDHWM)
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        sock.bind(f"tcp://{host}:0")
        self.serve = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.group.meta["serve"] = self.serve
        watcher = asyncio.ensure_future(self._follow_workers())
        try:
            await self.group.run(stop, drain_timeout=drain_timeout)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            sock.close(0)
            ctx.term()

    def _make_work(self, member: GroupMember, record: GroupRecord) -> QueueFront:
        assert self._sock is not None
        front = self.front = QueueFront(member, self.state, self._sock,
                                        leader_address=self.leader_address,
                                        live_workers=lambda: set(self.workers),
                                        lease_s=self.lease_s)
        front.start()
        return front

    def leader_address(self) -> str:
        """Where the group's leader serves, as far as this replica knows ("": unknown)."""
        member = self.group.member
        if member is None or member.core.leader == NONE:
            return ""
        if member.core.leader == self.group.node_id:
            return self.serve
        return str(self.group.metas.get(member.core.leader, {}).get("serve", ""))

    async def _follow_workers(self) -> None:
        while True:
            try:
                async for endpoints in self.names.watch_name(workers_name(self.name)):
                    self.workers = {str(e.meta.get("worker", e.endpoint)): dict(e.meta)
                                    for e in endpoints}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the name service is away: keep the last list
                log.warning("watching the workers failed, again in %.1f s: %r", RETRY_S, exc)
            await asyncio.sleep(RETRY_S)

    def status(self) -> dict[str, Any]:
        """The group's status, the queue's counts and counters, and the front's."""
        out = self.group.status()
        state = self.state
        out.update(kind="queue", name=self.name, serve=self.serve, counts=state.counts(),
                   queue_counters=dict(state.counters), state_digest=state.state_digest(),
                   registered_workers=sorted(self.workers))
        return out
