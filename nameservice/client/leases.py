"""``LeaseKeeper``: a lease granted on entry, renewed in the background, revoked on exit.

    async with client.keep_alive(2.0) as lease:
        await client.put("names/svc/a", endpoint, lease=lease.id)
        await lease.lost.wait()           # set only if the cluster says the lease is gone

Renewal: a keepalive every ``ttl / 3``; a keepalive that fails (no leader, a timeout) is
retried at once, through whichever node leads now, until one answers. A node silent for
``ttl / 6`` (at least 0.1 s) is given up for the next one, so a frozen leader does not hold the
renewals until the lease runs out on its successor. ``lost`` is set when the
cluster answers that the lease does not exist (it expired: no keepalive reached a leader for a
whole TTL, or someone revoked it); the keeper then stops. A keeper cut off from the cluster
does not guess: it keeps trying, and learns the truth from the first answer.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from nameservice.errors import LeaseNotFound, NameServiceError

if TYPE_CHECKING:
    from .api import NameServiceClient

log = logging.getLogger(__name__)

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """A lease kept alive by a background task (see module docstring)."""

    def __init__(self, client: NameServiceClient, ttl: float) -> None:
        self._client = client
        self.ttl = ttl
        """The TTL asked for, in seconds (the cluster may raise it to its minimum)."""
        self.id = 0
        """The lease id, once granted."""
        self.lost = asyncio.Event()
        """Set when the cluster said the lease is gone."""
        self.renewals = 0
        self.valid_until = 0.0
        """Until when (``loop.time()``) the lease is surely still valid: when the last
        grant or keepalive the cluster answered was sent, plus the TTL (the cluster counts
        from when it received it, or later). A holder that must not act once the lease may
        have expired stops before this (``fabric/cluster/fence.py``)."""
        self._task: asyncio.Task | None = None

    async def start(self) -> LeaseKeeper:
        """Grant the lease and start renewing it."""
        sent = asyncio.get_running_loop().time()
        self.id = await self._client.lease_grant(self.ttl)
        self.valid_until = sent + self.ttl
        self._task = asyncio.ensure_future(self._renew())
        return self

    async def close(self, revoke: bool = True) -> None:
        """Stop renewing; revoke the lease unless told not to (or it is already lost)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if revoke and self.id and not self.lost.is_set():
            try:
                await self._client.lease_revoke(self.id, timeout=max(1.0, self.ttl))
            except NameServiceError as exc:  # it will expire by itself
                log.info("could not revoke lease %d (%s); it expires after its TTL",
                         self.id, exc)

    async def __aenter__(self) -> LeaseKeeper:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _renew(self) -> None:
        interval = self.ttl / 3
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            while True:
                started = loop.time()
                try:
                    ttl = await self._client.lease_keepalive(
                        self.id, timeout=max(1.0, 3 * interval),
                        attempt_timeout=max(0.1, interval / 2))
                except LeaseNotFound:
                    self.lost.set()
                    return
                except NameServiceError as exc:
                    log.debug("keepalive of lease %d failed (%s); retrying", self.id, exc)
                    # Pace the retries when failures come fast (e.g. a refusal).
                    await asyncio.sleep(max(0.0, 0.05 - (loop.time() - started)))
                    continue
                self.renewals += 1
                self.valid_until = max(self.valid_until, started + ttl)
                interval = ttl / 3
                break
