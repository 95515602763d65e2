"""A thin synchronous twin of ``NameServiceClient`` for scripts: it runs the asyncio client on
its own event loop in a background thread and waits for each call.

    with SyncNameServiceClient("127.0.0.1:7401,127.0.0.1:7402") as ns:
        ns.put("svc/a", "tcp://10.0.0.5:9000")
        with ns.keep_alive(2.0) as lease:          # renewed on the client's thread
            ns.put("names/svc/a", "tcp://10.0.0.5:9000", lease=lease.id)
            lease.lost.wait(10)                    # a threading.Event here
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from .api import NameServiceClient
from .leases import LeaseKeeper
from .watch import Watch, WatchEvent


class SyncNameServiceClient:
    """Blocking calls with the same names and arguments as ``NameServiceClient``.

    Use as a context manager, or call ``close()``: the background thread ends with it.
    """

    def __init__(self, addresses: list[str] | str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ns-client",
                                        daemon=True)
        self._thread.start()
        self._keepers: set[SyncLeaseKeeper] = set()
        try:
            self._client = self._run(self._make(addresses, options))
            self._run(self._client.connect())
        except BaseException:
            self._stop()
            raise

    @staticmethod
    async def _make(addresses: list[str] | str, options: dict) -> NameServiceClient:
        return NameServiceClient(addresses, **options)

    def _run(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(method(*args, **kwargs))

        call.__doc__ = method.__doc__
        return call

    def watch(self, key_or_prefix: bytes | str, **options: Any) -> SyncWatch:
        """``NameServiceClient.watch`` for blocking code: iterate it with ``for``."""
        async def make() -> Watch:
            return self._client.watch(key_or_prefix, **options)
        return SyncWatch(self, self._run(make()))

    def keep_alive(self, ttl: float) -> SyncLeaseKeeper:
        """``NameServiceClient.keep_alive`` for blocking code: ``with`` grants the lease,
        renews it every ttl/3 on the client's thread and revokes it on exit."""
        return SyncLeaseKeeper(self, ttl)

    def close(self) -> None:
        """Close the client and stop its thread. Leases still kept stop being renewed (they
        expire after their TTL); revoke them first with their own ``close()``."""
        if self._thread.is_alive():
            try:
                for keeper in list(self._keepers):
                    keeper.close(revoke=False)
                self._run(self._client.close())
            finally:
                self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncNameServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncWatch:
    """A ``Watch`` for blocking code: ``for event in watch:`` (each step waits for the next
    event), ``watch.close()``. Runs on its client's loop thread."""

    def __init__(self, client: SyncNameServiceClient, watch: Watch) -> None:
        self._client = client
        self.watch = watch

    def __iter__(self) -> SyncWatch:
        return self

    def __next__(self) -> WatchEvent:
        try:
            return self._client._run(self.watch.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def started(self) -> int:
        """Wait until a node serves the watch; the revision after which its events come."""
        return self._client._run(self.watch.started())

    def close(self) -> None:
        """Stop watching."""
        self._client._run(self.watch.close())

    def __enter__(self) -> SyncWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncLeaseKeeper:
    """A ``LeaseKeeper`` for blocking code, renewing on its client's loop thread.

    ``with ns.keep_alive(ttl) as lease:`` (or ``start()`` / ``close()``); ``id``, ``ttl``,
    ``renewals`` as on ``LeaseKeeper``; ``lost`` is a ``threading.Event``, set when the
    cluster says the lease is gone (the keeper then stops renewing).
    """

    def __init__(self, client: SyncNameServiceClient, ttl: float) -> None:
        self._client = client
        self.ttl = ttl
        self.lost = threading.Event()
        """Set when the cluster said the lease is gone."""
        self._keeper: LeaseKeeper | None = None
        self._relay: asyncio.Future | None = None
        self._closed = False

    @property
    def id(self) -> int:
        """The lease id, once granted (0 before)."""
        return self._keeper.id if self._keeper is not None else 0

    @property
    def renewals(self) -> int:
        """Keepalives answered so far."""
        return self._keeper.renewals if self._keeper is not None else 0

    def start(self) -> SyncLeaseKeeper:
        """Grant the lease and start renewing it."""
        async def start() -> None:
            keeper = await self._client._client.keep_alive(self.ttl).start()
            self._keeper = keeper
            self._relay = asyncio.ensure_future(self._relay_lost(keeper))

        self._client._run(start())
        self._client._keepers.add(self)
        return self

    async def _relay_lost(self, keeper: LeaseKeeper) -> None:
        await keeper.lost.wait()
        self.lost.set()

    def close(self, revoke: bool = True) -> None:
        """Stop renewing; revoke the lease unless told not to (or it is already lost)."""
        self._client._keepers.discard(self)
        keeper = self._keeper
        if keeper is None or self._closed:
            return
        self._closed = True

        async def close() -> None:
            if self._relay is not None:
                self._relay.cancel()
            await keeper.close(revoke=revoke)

        self._client._run(close())

    def __enter__(self) -> SyncLeaseKeeper:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
