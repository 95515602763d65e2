"""Partitioned channels: one channel cut into K, a message routed to one of them by its key.

A channel with K > 1 partitions is K channels, ``partition_channel(channel, p, K)`` =
``CHANNEL/pP``, each with intermediaries of its own; a stateful component with K partitions
runs one replica group per partition, each consuming its own. A producer sends through a
``PartitionedOutput``: ``send(payload, key=...)`` goes to partition ``partition_of(key, K)``, so
every message with one key reaches the same group (and, through one producer, in order of
sending within each batch). Without a key, messages go round the partitions in turn.

The partition of a key is fixed by K alone, in any language: the key as bytes (``bytes`` as
they are; ``str`` in UTF-8; ``int`` as its decimal digits in ASCII), hashed with BLAKE2b (8-byte
digest), read as a little-endian unsigned integer, modulo K.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from typing import Any

from fabric.errors import ConfigError
from fabric.ports.output import OutputPort

__all__ = ["PartitionedOutput", "key_bytes", "partition_channel", "partition_of"]

_blake2b = hashlib.blake2b


def partition_channel(channel: str, partition: int, partitions: int) -> str:
    """The channel of ``partition`` (of ``partitions``): ``channel`` itself when there is one."""
    if not 0 <= partition < partitions:
        raise ConfigError(f"partition {partition} is not in 0..{partitions - 1}")
    return channel if partitions == 1 else f"{channel}/p{partition}"


def key_bytes(key: bytes | str | int) -> bytes:
    """A key as the bytes its partition is computed from."""
    if type(key) is str:
        return key.encode()  # type: ignore[union-attr]
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("ascii")
    raise ConfigError(f"a partition key must be bytes, str or int, not {type(key).__name__}")


def partition_of(key: bytes | str | int, partitions: int) -> int:
    """The partition (0..partitions-1) messages with ``key`` go to."""
    digest = hashlib.blake2b(key_bytes(key), digest_size=8).digest()
    return int.from_bytes(digest, "little") % partitions


class PartitionedOutput:
    """An output port per partition of ``channel``; ``send(payload, key=...)`` routes by key.

    ``ports[p]`` is partition p's port (on ``partition_channel(channel, p, K)``). Waiting,
    flushing, draining and closing apply to every port.
    """

    def __init__(self, channel: str, ports: list[OutputPort]) -> None:
        if not ports:
            raise ConfigError("a partitioned output needs at least one port")
        wanted = [partition_channel(channel, p, len(ports)) for p in range(len(ports))]
        if [port.channel for port in ports] != wanted:
            raise ConfigError(f"the ports of {channel!r} must be on {wanted}, in that order")
        self.channel = channel
        self.ports = ports
        self._next = 0

    @property
    def partitions(self) -> int:
        """How many partitions the channel has."""
        return len(self.ports)

    async def start(self) -> PartitionedOutput:
        """Start every port."""
        for port in self.ports:
            await port.start()
        return self

    def send(self, payload: Any, key: bytes | str | int | None = None) -> Awaitable[None]:
        """Send ``payload`` to the partition of ``key`` (None: the next partition in turn);
        await the result, as ``OutputPort.send``'s (it is that coroutine: no extra frame per
        message)."""
        ports = self.ports
        if key is None:
            port = ports[self._next]
            self._next = (self._next + 1) % len(ports)
        else:
            data = key if type(key) is bytes else key_bytes(key)
            port = ports[int.from_bytes(_blake2b(data, digest_size=8).digest(),  # type: ignore[arg-type]
                                        "little") % len(ports)]
        return port.send(payload)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything sent through every partition is acknowledged."""
        await asyncio.gather(*(port.flush(timeout) for port in self.ports))

    @property
    def unacked(self) -> int:
        """Messages sent and not acknowledged, over all partitions."""
        return sum(port.unacked for port in self.ports)

    async def drain(self, timeout: float | None = None) -> list:
        """Drain every port (see ``OutputPort.drain``); their reports."""
        kwargs = {} if timeout is None else {"timeout": timeout}
        return list(await asyncio.gather(*(port.drain(**kwargs) for port in self.ports)))

    async def close(self) -> None:
        """Close every port at once."""
        for port in self.ports:
            await port.close()

    async def __aenter__(self) -> PartitionedOutput:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()
