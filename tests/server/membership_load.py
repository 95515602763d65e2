"""Writes, CAS and a watch kept running against a cluster while its members change, and the
checks made at the end: every acknowledged write present, no CAS applied twice, the watch saw
every change once."""
from __future__ import annotations

import asyncio
import time

from nameservice.client import NameServiceClient
from nameservice.errors import NameServiceError
from tests.waiting import async_wait_for

PUT_WORKERS = 3


class Load:
    """``async with Load(client) as load:`` starts it (and stops it, whatever happens);
    ``await stop()`` then ``await check(client)`` at the end.

    Puts go to ``load/W/N`` (N counting up per worker), CAS to unique keys ``cas/N`` that must
    be absent: a CAS applied twice would answer "failed" to its caller while the key holds the
    caller's value. A prefix watch on ``load/`` records every event.
    """

    def __init__(self, client: NameServiceClient) -> None:
        self.client = client
        self.acked: dict[str, str] = {}
        self.ack_times: list[float] = []
        self.unknown: list[str] = []  # outcome unknown (timed out): may or may not be in
        self.cas_ok: list[str] = []
        self.cas_failed: list[str] = []
        self.events: list[tuple[str, str, int]] = []
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._watch = None

    async def __aenter__(self) -> Load:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watch is not None:
            await self._watch.close()

    async def start(self) -> None:
        """Start the watch (from now), the put workers and the CAS worker."""
        self._watch = self.client.watch("load/")
        await self._watch.started()
        self._tasks = [asyncio.ensure_future(self._put_worker(w)) for w in range(PUT_WORKERS)]
        self._tasks.append(asyncio.ensure_future(self._cas_worker()))
        self._tasks.append(asyncio.ensure_future(self._watcher()))

    async def _put_worker(self, worker: int) -> None:
        n = 0
        while not self._stopping:
            key, value = f"load/{worker}/{n}", f"{worker}.{n}"
            try:
                await self.client.put(key, value)
                self.acked[key] = value
                self.ack_times.append(time.monotonic())
            except NameServiceError:
                self.unknown.append(key)
                await asyncio.sleep(0.01)  # the cluster is changing: do not spin
            n += 1

    async def _cas_worker(self) -> None:
        n = 0
        while not self._stopping:
            key = f"cas/{n}"
            try:
                result = await self.client.cas(key, str(n), expect_absent=True)
                (self.cas_ok if result.succeeded else self.cas_failed).append(key)
            except NameServiceError:
                await asyncio.sleep(0.01)  # outcome unknown: not counted either way
            n += 1

    async def _watcher(self) -> None:
        assert self._watch is not None
        async for event in self._watch:
            self.events.append((event.kind, event.kv.key.decode(), event.revision))

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest time (s) between two acknowledged puts after ``since``."""
        times = sorted(t for t in self.ack_times if t >= since)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    async def stop(self) -> None:
        """Stop the workers (the watch runs on until ``check``)."""
        self._stopping = True
        await asyncio.gather(*self._tasks[:-1])

    async def check(self, client: NameServiceClient, timeout: float = 10.0) -> None:
        """Every acknowledged put readable, every CAS answered OK holding its value and none
        answered "failed", and the watch saw every acknowledged put exactly once."""
        for key, value in self.acked.items():
            kv = await client.get(key)
            assert kv is not None and kv.value.decode() == value, (key, kv)
        assert self.cas_failed == [], f"CAS answered failed (applied twice?): {self.cas_failed}"
        for key in self.cas_ok:
            kv = await client.get(key)
            assert kv is not None and kv.value.decode() == key.split("/")[1]

        def all_seen() -> bool:
            return set(self.acked) <= {key for kind, key, _ in self.events if kind == "put"}
        await async_wait_for(all_seen, timeout, "the watch to see every acknowledged put")
        revisions = [rev for _, _, rev in self.events]
        assert len(revisions) == len(set(revisions)), "an event was delivered twice"
        assert revisions == sorted(revisions)
