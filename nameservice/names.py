"""The names registry: which endpoints serve a name now, kept alive by leases.

    names = Names(client)
    async with names.register("channel/orders", "tcp://10.0.0.5:9000", ttl=2.0) as reg:
        ...                                       # the entry lives while this process does
    reg = await names.register("channel/orders", "tcp://10.0.0.5:9000")   # or keep it open
    endpoints = await names.resolve("channel/orders")
    async for endpoints in names.watch_name("channel/orders"):
        ...                                       # the full current set, after each change

Layout in the key-value store: one key per registered instance,
``names/<name>/<instance>`` → msgpack ``{"endpoint": str, "meta": dict}``. The instance is a
random id made at registration, so many processes may register the same name. Each key is
attached to its registration's lease: if the process dies its keepalives stop and the cluster
deletes the key after the TTL (within TTL + 1 s of the death). A live process puts its key
back by itself (``Registration``) when its lease expired anyway (frozen or cut off past the
TTL), and when anyone else deletes or overwrites the key: each registration watches its own.

A name is a non-empty string without empty ``/``-separated parts; instances never contain
``/``, so ``names/a/`` lists the instances of ``a`` and not those of ``a/b``.

``watch_name`` is the zguide "Clone" pattern: a consistent range gives the entries and the
revision they were read at; a watch from that revision + 1 keeps them current. If the watch
cannot resume (``Compacted``), it reloads with a new range and goes on.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import AsyncIterator

import msgpack

from nameservice import logs
from nameservice.client import NameServiceClient
from nameservice.client.leases import LeaseKeeper
from nameservice.errors import Compacted, LeaseNotFound, NameServiceError
from nameservice.kv import KeyValue

__all__ = ["Endpoint", "Names", "Registration", "NAMES_PREFIX", "entry_of"]

log = logging.getLogger(__name__)

NAMES_PREFIX = "names/"
"""Where the registry lives in the key-value store."""
MAX_META_BYTES = 16 << 10
"""Largest encoded meta dict accepted by ``register``."""
RETRY_S = 0.5
"""Pause between two attempts to put back a registration whose lease was lost."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One registered instance of a name: where it listens, and what it says about itself."""

    name: str
    endpoint: str
    meta: dict = field(hash=False, compare=True)
    key: bytes = b""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or any(not part for part in name.split("/")):
        raise ValueError(f"bad name {name!r}: a non-empty string without empty '/' parts")
    return name


def _prefix(name: str) -> bytes:
    return f"{NAMES_PREFIX}{_check_name(name)}/".encode()


def _endpoint(name: str, prefix: bytes, kv: KeyValue) -> Endpoint | None:
    """The entry stored in ``kv``; None if the key is not a direct instance of ``name`` or its
    value is not a registry entry (written by someone else: skipped, never fatal)."""
    instance = kv.key[len(prefix):]
    if not kv.key.startswith(prefix) or not instance or b"/" in instance:
        return None
    try:
        entry = msgpack.unpackb(kv.value, raw=False)
    except Exception:  # msgpack raises many kinds on garbage
        return None
    if (not isinstance(entry, dict) or not isinstance(entry.get("endpoint"), str)
            or not isinstance(entry.get("meta", {}), dict)):
        return None
    return Endpoint(name, entry["endpoint"], entry.get("meta", {}), kv.key)


def entry_of(kv: KeyValue) -> Endpoint | None:
    """The registry entry a key-value holds (its name read from the key), or None if it is
    not one: a key outside ``names/<name>/<instance>`` or a value that does not decode."""
    if not kv.key.startswith(NAMES_PREFIX.encode()):
        return None
    name, sep, _instance = kv.key[len(NAMES_PREFIX):].rpartition(b"/")
    try:
        text = name.decode()
        _check_name(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return _endpoint(text, _prefix(text), kv) if sep else None


def _sorted(entries: dict[bytes, Endpoint]) -> list[Endpoint]:
    return [entries[key] for key in sorted(entries)]


class Registration:
    """One registered instance of a name, kept alive by a lease renewed in the background.

    The registration owns its key and keeps it as it put it, against two kinds of loss:

    * **its lease expires** (no keepalive reached a leader for a whole TTL: the process was
      frozen or cut off) and the entry goes with it: it is put back under the same key with a
      new lease (counted in ``losses``);
    * **someone else deletes or overwrites the key** (``fabric kv del``, a raw put pointing the
      name elsewhere): the registration watches its own key and puts its entry back with its
      lease as soon as the change shows, logging a warning and counting it in ``repairs``.

    Both retry every ``RETRY_S`` while the cluster cannot take the write;
    ``reregister=False`` turns both off (the registration then stays lost). ``lost`` is set
    while the entry is gone after a lease loss and cleared once it is registered again.
    ``await close()`` (or leaving ``async with``) deletes the entry at once and stops both.
    """

    def __init__(self, names: Names, endpoint: Endpoint, value: bytes, ttl: float,
                 keeper: LeaseKeeper, reregister: bool = True, revision: int = 0) -> None:
        self.endpoint = endpoint
        self._names = names
        self._value = value
        self._ttl = ttl
        self._keeper = keeper
        self._reregister = reregister
        self._closed = False
        self._written = revision  # the revision of our latest put of the entry
        self._lock = asyncio.Lock()  # one restore at a time, whichever loss asked for it
        self.lost = asyncio.Event()
        """Set while the entry is gone (its lease expired), cleared once registered again."""
        self.losses = 0
        """How many times the cluster let this registration's lease expire."""
        self.repairs = 0
        """How many times the entry was put back after someone else deleted or changed it."""
        self._tasks = [asyncio.ensure_future(self._watch_lease())]
        if reregister:
            self._tasks.append(asyncio.ensure_future(self._guard_key()))

    @property
    def key(self) -> bytes:
        """The key of this instance (the same across re-registrations)."""
        return self.endpoint.key

    @property
    def lease(self) -> int:
        """The id of the lease that keeps the entry alive now."""
        return self._keeper.id

    async def _watch_lease(self) -> None:
        while True:
            await self._keeper.lost.wait()
            self.losses += 1
            self.lost.set()
            if not self._reregister:
                return
            log.warning("the lease of %s expired; registering it again", self.key.decode())
            async with self._lock:
                await self._new_lease()
            log.info("%s registered again", self.key.decode())
            self.lost.clear()

    async def _new_lease(self) -> None:
        await self._keeper.close(revoke=False)  # its renewals ended with the loss
        self._keeper, self._written = await self._names._put_entry(
            self.key, self._value, self._ttl, retry=True)

    def _ours(self, event) -> bool:
        kv = event.kv
        return event.kind == "put" and kv.value == self._value and kv.lease == self._keeper.id

    async def _guard_key(self) -> None:
        """Watch the key from our own put on; put the entry back whenever a change that is not
        ours shows up (a delete, or a put of another value or lease)."""
        client = self._names.client
        while True:
            watch = client.watch(self.key, prefix=False, start_revision=self._written + 1)
            try:
                async for event in watch:
                    if event.revision > self._written and not self._ours(event):
                        await self._repair(event)
                return
            except Compacted:
                # The history no longer reaches back to our put: compare with what is there.
                current = await client.get(self.key)
                if current is None or current.value != self._value or (
                        current.lease != self._keeper.id):
                    await self._repair(None)
                elif current.mod_revision > self._written:
                    self._written = current.mod_revision
            finally:
                await watch.close()

    async def _repair(self, event) -> None:
        async with self._lock:
            if event is not None and event.revision <= self._written:
                return  # put back already (after the lease was lost)
            while not self._keeper.lost.is_set():
                try:
                    result = await self._names.client.put(self.key, self._value,
                                                          lease=self._keeper.id)
                except LeaseNotFound:
                    return  # the lease went too: its keeper hears so, and a new one is made
                except NameServiceError as exc:
                    log.info("putting %s back failed (%s); retrying", self.key.decode(), exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                self._written = result.revision
                # Counted once the put went through: a delete by our own lease's expiry ends
                # in LeaseNotFound above, and is a loss, not a repair.
                self.repairs += 1
                what = "changed" if event is None else (
                    "deleted" if event.kind == "delete" else "overwritten")
                logs.event(log, "registration_repaired", level=logging.WARNING,
                           key=self.key.decode(), change=what, revision=result.revision)
                return

    async def close(self) -> None:
        """Deregister now: revoking the lease deletes the entry with it."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._keeper.close(revoke=True)

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _Registering:
    """A registration under way: awaitable, or an async context manager."""

    def __init__(self, coro) -> None:
        self._coro = coro
        self._registration: Registration | None = None

    def __await__(self):
        return self._coro.__await__()

    async def __aenter__(self) -> Registration:
        self._registration = await self._coro
        return self._registration

    async def __aexit__(self, *exc_info: object) -> None:
        registration = self._registration
        assert registration is not None  # set by __aenter__
        await registration.close()


class Names:
    """The registry API over a connected ``NameServiceClient``."""

    def __init__(self, client: NameServiceClient) -> None:
        self.client = client

    def register(self, name: str, endpoint: str, meta: dict | None = None,
                 ttl: float = 2.0, *, reregister: bool = True) -> _Registering:
        """Register ``endpoint`` under ``name`` until the registration is closed or this
        process dies (then it vanishes within ``ttl`` + 1 s).

        ``await`` it for the ``Registration``, or use it as ``async with ... as reg:`` to
        deregister on leaving the block. The registration puts itself back if its lease is
        ever lost, unless ``reregister`` is False (see :class:`Registration`).
        """
        return _Registering(self._register(name, endpoint, meta, ttl, reregister))

    async def _register(self, name: str, endpoint: str, meta: dict | None,
                        ttl: float, reregister: bool) -> Registration:
        prefix = _prefix(name)
        if not isinstance(endpoint, str) or not endpoint:
            raise ValueError("an endpoint is a non-empty string")
        value = msgpack.packb({"endpoint": endpoint, "meta": dict(meta or {})}, use_bin_type=True)
        if len(value) > MAX_META_BYTES:
            raise ValueError(f"the entry is {len(value)} bytes; at most {MAX_META_BYTES}")
        key = prefix + secrets.token_hex(8).encode()
        keeper, revision = await self._put_entry(key, value, ttl)
        return Registration(self, Endpoint(name, endpoint, dict(meta or {}), key), value, ttl,
                            keeper, reregister, revision)

    async def _put_entry(self, key: bytes, value: bytes, ttl: float,
                         retry: bool = False) -> tuple[LeaseKeeper, int]:
        """Grant a lease kept alive and put ``key`` attached to it; the keeper and the put's
        revision. With ``retry``, keep trying every ``RETRY_S`` through failures of the name
        service instead of raising them."""
        while True:
            keeper = self.client.keep_alive(ttl)
            try:
                await keeper.start()
                result = await self.client.put(key, value, lease=keeper.id)
                return keeper, result.revision
            except BaseException as exc:
                # A lease granted but not used would only expire: revoke it now if we can.
                await keeper.close(revoke=True)
                if not retry or not isinstance(exc, NameServiceError):
                    raise
                log.info("registering %s failed (%s); retrying", key.decode(), exc)
            await asyncio.sleep(RETRY_S)

    async def resolve(self, name: str) -> list[Endpoint]:
        """The endpoints registered under ``name`` now (a consistent read), sorted by key."""
        entries, _ = await self._load(name, _prefix(name))
        return _sorted(entries)

    async def _load(self, name: str, prefix: bytes) -> tuple[dict[bytes, Endpoint], int]:
        kvs, revision = await self.client.range_revision(prefix)
        entries = {}
        for kv in kvs:
            entry = _endpoint(name, prefix, kv)
            if entry is not None:
                entries[kv.key] = entry
        return entries, revision

    async def watch_name(self, name: str) -> AsyncIterator[list[Endpoint]]:
        """The full current endpoint list of ``name``: at once, then after each change.

        Bursts of changes that arrive together give one list. Runs until the caller stops
        iterating (``aclose()``, or leaving ``async for``); raises ``Unavailable`` if no node
        can be reached to start with.
        """
        prefix = _prefix(name)
        entries, revision = await self._load(name, prefix)
        yield _sorted(entries)
        while True:
            watch = self.client.watch(prefix, start_revision=revision + 1)
            try:
                async for event in watch:
                    changed = self._apply(name, prefix, entries, event)
                    # Take what else is queued already, and show one list for the burst.
                    while watch.queued():
                        changed |= self._apply(name, prefix, entries, await watch.__anext__())
                    if changed:
                        yield _sorted(entries)
                return
            except Compacted:
                # The history no longer reaches back: reload, and yield if that changed.
                fresh, revision = await self._load(name, prefix)
                if fresh != entries:
                    entries = fresh
                    yield _sorted(entries)
            finally:
                await watch.close()

    @staticmethod
    def _apply(name: str, prefix: bytes, entries: dict[bytes, Endpoint], event) -> bool:
        key = event.kv.key
        if event.kind == "delete":
            return entries.pop(key, None) is not None
        entry = _endpoint(name, prefix, event.kv)
        if entry is None:
            return entries.pop(key, None) is not None
        if entries.get(key) == entry:
            return False
        entries[key] = entry
        return True

