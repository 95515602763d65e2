"""An in-process cluster for tests: N nodes on the running event loop, each on a
``MemoryStorage``, all on one ``MemoryNetwork``; and a key-value client speaking the real wire
frames over it.

The nodes are the real ``Node`` (intake, batcher, pipeline, Raft core, state machine); only
the sockets and the disk are replaced by their in-memory twins. Time is real (the nodes' tick
timers), so tests wait on conditions with deadlines (``async_wait_for``).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from nameservice import wire
from nameservice.kv import KeyValue, Result, SessionOpened
from nameservice.kv.codec import kv_from_wire, result_from_wire
from nameservice.raft.types import Role
from nameservice.server.config import NodeSettings
from nameservice.server.memtransport import MemoryClient, MemoryNetwork
from nameservice.server.node import Node
from nameservice.server.stale import StaleWrites
from nameservice.storage import MemoryStorage
from tests.waiting import async_wait_for

RETRY_S = 0.01
"""Pause of the test client before trying the next node (none answered usefully)."""


class InProcessCluster:
    """``nodes`` name-service nodes in this process (use ``async with``).

    Node ``i`` listens at ``addresses[i]`` on ``network``; its storage is ``storages[i]``.
    ``stop(i)`` is a clean stop (a leader hands over first); ``crash(i)`` keeps only what the
    node's storage made durable, as a killed process would; ``start(i)`` restarts a node from
    its storage.
    """

    def __init__(self, nodes: int = 3, election_timeout_ms: tuple[int, int] = (150, 300),
                 **settings) -> None:
        self.network = MemoryNetwork()
        self.ids = list(range(1, nodes + 1))
        self.addresses = {i: f"node{i}.memory:{7000 + i}" for i in self.ids}
        self.storages = {i: MemoryStorage() for i in self.ids}
        self.election_timeout_ms = election_timeout_ms
        self.settings = settings
        self.nodes: dict[int, Node] = {}
        self.learners: dict[int, tuple[int, ...]] = {}  # a joiner's start-up learners
        self._runs: dict[int, tuple[asyncio.Event, asyncio.Task]] = {}
        self._clients: list[MemoryClient] = []

    async def __aenter__(self) -> InProcessCluster:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self, node_id: int | None = None) -> None:
        """Start one node (or every node not running), from its storage."""
        for i in [node_id] if node_id is not None else self.ids:
            if self.running(i):
                continue
            if i in self.nodes:  # a restart: the state the last run made durable
                self.storages[i] = self.storages[i].crashed()
            settings = NodeSettings(id=i, cluster=dict(self.addresses), data_dir="(memory)",
                                    learners=self.learners.get(i, ()),
                                    election_timeout_ms=self.election_timeout_ms,
                                    advertise=False, **self.settings)
            node = Node(settings, self.network.transport, storage=self.storages[i],
                        stale=StaleWrites(None))
            stop = asyncio.Event()
            self.nodes[i] = node
            self._runs[i] = (stop, asyncio.create_task(node.run(stop), name=f"node-{i}"))

    def join(self, node_id: int, members: dict[int, str], learners: tuple[int, ...]) -> str:
        """Start a new node that knows the cluster as ``members`` (id -> address, itself
        included) with ``learners`` — what ``fabric ns start --join`` learns; its address."""
        address = f"node{node_id}.memory:{7000 + node_id}"
        self.ids.append(node_id)
        self.addresses[node_id] = address
        self.storages[node_id] = MemoryStorage()
        self.learners[node_id] = learners
        settings = NodeSettings(id=node_id, cluster={**members, node_id: address},
                                data_dir="(memory)", learners=learners,
                                election_timeout_ms=self.election_timeout_ms, advertise=False,
                                **self.settings)
        node = Node(settings, self.network.transport, storage=self.storages[node_id],
                    stale=StaleWrites(None))
        stop = asyncio.Event()
        self.nodes[node_id] = node
        self._runs[node_id] = (stop, asyncio.create_task(node.run(stop), name=f"node-{node_id}"))
        return address

    def running(self, node_id: int) -> bool:
        """Whether the node serves."""
        run = self._runs.get(node_id)
        return run is not None and not run[1].done()

    async def stop(self, node_id: int) -> None:
        """Stop a node cleanly (a leader hands its leadership over first)."""
        stop, task = self._runs[node_id]
        stop.set()
        await task

    async def crash(self, node_id: int) -> None:
        """Stop a node at once, keeping only what its storage made durable."""
        self.storages[node_id] = self.storages[node_id].crashed()
        _, task = self._runs[node_id]
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        """Crash every node still running; close the clients."""
        for client in self._clients:
            client.close()
        for i in self.ids:
            if self.running(i):
                await self.crash(i)

    # ------------------------------------------------------------------ observing

    def leader(self, among: list[int] | None = None) -> int | None:
        """The running node (of ``among``) that leads in the highest term, if any."""
        leaders = [(self.nodes[i].core.term, i) for i in among or self.ids
                   if self.running(i) and self.nodes[i].core.role is Role.LEADER]
        return max(leaders)[1] if leaders else None

    async def wait_for_leader(self, among: list[int] | None = None,
                              timeout: float = 10.0) -> int:
        """Wait until a node of ``among`` leads and every other one of them follows it."""
        among = among or [i for i in self.ids if self.running(i)]

        def agreed() -> int | None:
            leader = self.leader(among)
            if leader is None:
                return None
            return leader if all(self.nodes[i].core.leader == leader for i in among) else None
        return await async_wait_for(agreed, timeout, f"a leader among nodes {among}")

    async def wait_caught_up(self, ids: list[int] | None = None, timeout: float = 10.0) -> None:
        """Wait until every node of ``ids`` has applied the highest commit index among them."""
        ids = ids or [i for i in self.ids if self.running(i)]

        def caught_up() -> bool:
            top = max(self.nodes[i].core.commit_index for i in ids)
            return all(self.nodes[i].machine.applied_index >= top for i in ids)
        await async_wait_for(caught_up, timeout, f"nodes {ids} to apply every committed entry")

    def client(self) -> KvClient:
        """A key-value client of the cluster, closed with it."""
        raw = self.network.client()
        self._clients.append(raw)
        return KvClient(raw, list(self.addresses.values()))


class Refused(Exception):
    """The cluster answered BAD_REQUEST (the message is its reason)."""


class KvClient:
    """Key-value calls in real wire frames over a ``MemoryClient``.

    ``call`` follows NOT_LEADER redirects and tries the next node when one is silent, busy or
    knows no leader, until its deadline. Writes travel in a session (``open_session``): each
    ``write`` takes the next seq unless given one — a retry passes the seq it retries.
    """

    def __init__(self, raw: MemoryClient, addresses: list[str], attempt_s: float = 0.5) -> None:
        self.raw = raw
        self.addresses = addresses
        self.target = addresses[0]
        self.attempt_s = attempt_s
        self.client_id = 0
        self.seq = 0

    async def call(self, op: int, args: list, timeout: float = 10.0) -> object:
        """The payload of the first OK reply to ``[rid, op, *args]`` from some node."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no node answered op {op} in {timeout} s")
            try:
                status, payload = await self.raw.call(self.target, op, args,
                                                      timeout=min(self.attempt_s, left))
            except TimeoutError:
                status, payload = None, None
            if status == wire.ST_OK:
                return payload
            if status == wire.ST_BAD_REQUEST:
                raise Refused(str(payload))
            if status == wire.ST_NOT_LEADER and payload:
                self.target = payload  # redirected to the leader
                continue
            # silent, BUSY, UNAVAILABLE, or no leader known there: the next node
            self.target = self.addresses[(self.addresses.index(self.target) + 1)
                                         % len(self.addresses)]
            await asyncio.sleep(RETRY_S)

    async def open_session(self) -> int:
        """Open a session for the writes; its client id."""
        result = result_from_wire(await self.call(wire.OP_WRITE, [[9]]))
        assert type(result) is SessionOpened, result
        self.client_id, self.seq = result.client_id, 0
        return self.client_id

    def request(self, command: list, seq: int) -> list:
        """The WRITE argument carrying ``command`` as request ``seq`` of the session."""
        return [[16, self.client_id, seq, 0, command]]

    async def write(self, command: list, seq: int | None = None) -> Result:
        """Apply ``command`` (its kv wire array) as the session's request ``seq`` (default:
        the next one); the result."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        return result_from_wire(await self.call(wire.OP_WRITE, self.request(command, seq)))

    async def put(self, key: bytes, value: bytes) -> Result:
        """Put ``key``; the ``PutResult``."""
        return await self.write([1, key, value, 0, False])

    async def get(self, key: bytes, address: str | None = None) -> KeyValue | None:
        """A consistent (ReadIndex) read of ``key``, at ``address`` only if given."""
        args = [key, True]
        if address is None:
            payload = await self.call(wire.OP_GET, args)
        else:
            status, payload = await self.raw.call(address, wire.OP_GET, args, timeout=5.0)
            assert status == wire.ST_OK, (status, payload)
        kv, _revision = payload
        return None if kv is None else kv_from_wire(kv)


def cas_absent(key: bytes, value: bytes) -> list:
    """The kv wire array of a CAS that creates ``key`` only if it does not exist."""
    return [4, key, value, 2, None, 0]


def cas_value(key: bytes, value: bytes, expect: bytes) -> list:
    """The kv wire array of a CAS that sets ``key`` only if its value is ``expect``."""
    return [4, key, value, 0, expect, 0]
