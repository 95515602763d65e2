"""What fabric objects are called in the name service.

Two kinds of names (each a ``nameservice.names`` name, so each may have several instances):

* ``channel/<C>``: one instance per intermediary of channel C; its endpoint is the
  intermediary's data endpoint (``tcp://HOST:PORT``). Ports watch this name.
* ``process/<NAME>``: one instance per running fabric process called NAME; its endpoint is the
  process's control socket, its meta ``{"kind": "intermediary"|"component", "channel": ...}``
  (name-service nodes register too, as ``ns-<ID>`` with ``{"kind": "nameservice", ...}``).
  ``fabric drain NAME`` and ``fabric status`` find processes here.

Every registration holds a lease: a process that dies disappears from its names when the lease
expires (two seconds by default); one that exits cleanly deregisters at once; one whose lease
expired while it lives (frozen, cut off) registers again as soon as it hears so.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack

from fabric.errors import ConfigError
from nameservice.control import DEFAULT_TTL, PROCESS, process_name
from nameservice.errors import NameNotFound

__all__ = ["CHANNEL", "DEFAULT_TTL", "NAMES_PREFIX", "PARTITIONS", "PROCESS", "channel_name",
           "channel_partitions", "declare_partitions", "find_process", "list_names",
           "process_name", "watch_channel"]

CHANNEL = "channel/"
NAMES_PREFIX = b"names/"


def channel_name(channel: str) -> str:
    """The name under which the intermediaries of ``channel`` register."""
    return CHANNEL + channel


async def watch_channel(names: Any, channel: str) -> AsyncIterator[list[str]]:
    """The data endpoints of ``channel``'s intermediaries: the current list at once, then the
    full list again after every change (for :class:`fabric.runtime.resolver.Resolver`)."""
    async for endpoints in names.watch_name(channel_name(channel)):
        yield sorted(e.endpoint for e in endpoints)


PARTITIONS = "partitions/"
"""``partitions/<C>`` holds how many partitions channel C has (absent: one)."""


async def channel_partitions(client: Any, channel: str) -> int:
    """How many partitions ``channel`` has (1 unless declared)."""
    found = await client.get(PARTITIONS + channel)
    if found is None:
        return 1
    try:
        count = int(found.value)
    except ValueError:
        raise ConfigError(f"{PARTITIONS}{channel} holds {found.value[:20]!r}, not a count") \
            from None
    if count < 1:
        raise ConfigError(f"{PARTITIONS}{channel} holds {count}, not a count")
    return count


async def declare_partitions(client: Any, channel: str, count: int) -> None:
    """Declare that ``channel`` has ``count`` partitions (once: ConfigError if it was declared
    with another count — moving partitions is not done by changing the count)."""
    result = await client.cas(PARTITIONS + channel, str(count), expect_absent=True)
    if result.succeeded:
        return
    have = await channel_partitions(client, channel)
    if have != count:
        raise ConfigError(f"channel {channel!r} has {have} partitions, not {count}")


async def find_process(names: Any, name: str) -> list[Any]:
    """The registrations (``nameservice.names.Endpoint``) of process ``name``; raises
    :class:`NameNotFound` when no process of that name is registered."""
    found = await names.resolve(process_name(name))
    if not found:
        raise NameNotFound(f"no process named {name!r} is registered")
    return found


async def list_names(client: Any, prefix: str) -> dict[str, list[dict]]:
    """Every registered name starting with ``prefix`` (``channel/`` or ``process/``) ->
    its instances as ``{"endpoint", "meta", "instance"}``, read in one range request.
    Entries that do not decode are skipped."""
    full = NAMES_PREFIX + prefix.encode()
    result: dict[str, list[dict]] = {}
    for kv in await client.range(full):
        rest = kv.key[len(NAMES_PREFIX):].decode("utf-8", "replace")
        name, sep, instance = rest.rpartition("/")
        if not sep:
            continue
        try:
            value = msgpack.unpackb(kv.value, raw=False)
            entry = {"endpoint": str(value["endpoint"]), "meta": dict(value.get("meta") or {}),
                     "instance": instance}
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            continue
        result.setdefault(name, []).append(entry)
    return result
