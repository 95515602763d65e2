"""A thin synchronous twin of ``NameServiceClient`` for scripts: it runs the asyncio client on
its own event loop in a background thread and waits for each call."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from .api import NameServiceClient
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

    def close(self) -> None:
        """Close the client and stop its thread."""
        if self._thread.is_alive():
            try:
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
