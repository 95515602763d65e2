"""``Mirror``: every key under a prefix, kept current from a watch.

    mirror = Mirror(client, "cluster/")
    task = asyncio.ensure_future(mirror.run())
    await mirror.loaded.wait()
    while True:
        await mirror.wait_change(seen)      # the next version after ``seen``
        ...mirror.kvs...

The mirror loads the prefix with ``range_revision`` and follows it with a watch from the
next revision, so no change is missed or seen twice; if the watch's history no longer reaches
back (``Compacted``) it loads again. ``version`` counts the bursts of changes applied; a
reader compares it with the version it last acted on. Memory: the keys under the prefix, as
many as the name service holds (bounded by its ``max_keys``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from nameservice.errors import Compacted, NameServiceError
from nameservice.kv import KeyValue

__all__ = ["Mirror"]

log = logging.getLogger(__name__)
RETRY_S = 0.2


class Mirror:
    """The key-values under ``prefix``, by key (str), current to ``revision``."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self.kvs: dict[str, KeyValue] = {}
        self.revision = 0
        """The store revision the mirror reflects."""
        self.version = 0
        self.loaded = asyncio.Event()
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        """Load, then follow, until cancelled."""
        while True:
            try:
                kvs, revision = await self._client.range_revision(self.prefix)
            except NameServiceError as exc:
                log.debug("loading %s failed (%s); again", self.prefix, exc)
                await asyncio.sleep(RETRY_S)
                continue
            self.kvs = {kv.key.decode(errors="replace"): kv for kv in kvs}
            self.revision = revision
            await self._bump()
            self.loaded.set()
            try:
                await self._follow(revision)
            except Compacted:
                log.info("the watch of %s fell behind the history; loading again", self.prefix)
            except NameServiceError as exc:
                log.info("the watch of %s failed (%s); loading again", self.prefix, exc)
                await asyncio.sleep(RETRY_S)

    async def _follow(self, revision: int) -> None:
        watch = self._client.watch(self.prefix, start_revision=revision + 1)
        try:
            async for event in watch:
                self._apply(event)
                while watch.queued():  # one version for a burst
                    self._apply(await watch.__anext__())
                await self._bump()
        finally:
            await watch.close()

    def _apply(self, event: Any) -> None:
        key = event.kv.key.decode(errors="replace")
        if event.kind == "delete":
            self.kvs.pop(key, None)
        else:
            self.kvs[key] = event.kv
        self.revision = max(self.revision, event.revision)

    async def _bump(self) -> None:
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def wait_change(self, seen: int, timeout: float | None = None) -> int:
        """Wait until ``version`` passes ``seen`` (at most ``timeout`` seconds); the version."""
        async with self._changed:
            if self.version <= seen:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self.version > seen), timeout)
                except asyncio.TimeoutError:
                    pass
            return self.version

    def under(self, prefix: str) -> dict[str, KeyValue]:
        """The key-values whose key starts with ``prefix``."""
        return {k: kv for k, kv in self.kvs.items() if k.startswith(prefix)}
