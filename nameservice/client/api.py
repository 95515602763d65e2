"""The asyncio client of the name service: key-value operations over a ``Channel``.

Every write travels inside this client's session (``client_id``, ``seq``): the channel retries
it with the same seq until some leader answers, and the state machine answers a retry with the
original result. So a put or CAS that times out in one attempt and is retried is applied at
most once, and its caller learns its real outcome.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from nameservice.errors import (DecodeError, OutcomeUnknown, RequestRejected,
                                Unavailable)
from nameservice.kv import (CasResult, DeleteResult, KeyValue, PutResult, RejectCode,
                            Rejected, Result, SessionOpened)
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv.codec import kv_from_wire, result_from_wire
from nameservice.server import wire
from nameservice.server.config import parse_addresses

from .channel import Channel
from .watch import MAX_QUEUED, Watch, WatchSet

_OPEN_SESSION = [9]
_UNKNOWN_OUTCOME = (RejectCode.SESSION_EXPIRED, RejectCode.SEQ_TOO_OLD)


def _key(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


class _Session:
    """One client session: its id, the last seq used, and the seqs still unanswered."""

    __slots__ = ("client_id", "seq", "in_flight", "answered")

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.seq = 0
        self.in_flight: deque[int] = deque()
        self.answered: set[int] = set()

    def next(self) -> tuple[int, int]:
        """A new ``(seq, ack)``: ack is the highest seq below which every answer arrived."""
        self.seq += 1
        ack = self.in_flight[0] - 1 if self.in_flight else self.seq - 1
        self.in_flight.append(self.seq)
        return self.seq, ack

    def done(self, seq: int) -> None:
        in_flight = self.in_flight
        if in_flight and in_flight[0] == seq:
            in_flight.popleft()
            answered = self.answered
            while in_flight and in_flight[0] in answered:
                answered.discard(in_flight.popleft())
        else:
            self.answered.add(seq)


class NameServiceClient:
    """Talks to a name-service cluster. Use as ``async with NameServiceClient(addrs) as ns:``.

    ``addresses``: some or all nodes' ``HOST:PORT`` (a list or a comma-separated string); the
    client learns the leader from redirects. ``timeout``: how long one operation may take,
    retries included, before ``Unavailable``. ``attempt_timeout``: how long to wait for one
    node before trying the next.
    """

    def __init__(self, addresses: list[str] | str, *, timeout: float = 5.0,
                 attempt_timeout: float = 1.0, max_in_flight: int = 2048) -> None:
        if isinstance(addresses, str):
            addresses = parse_addresses(addresses)
        self._channel = Channel(list(addresses), timeout=timeout,
                                attempt_timeout=attempt_timeout, max_in_flight=max_in_flight)
        self._session: _Session | None = None
        self._opening: asyncio.Future | None = None
        self._watches: WatchSet | None = None

    async def __aenter__(self) -> NameServiceClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self, wait: float | None = None) -> None:
        """Open the sockets; wait until some node is connected (at most ``wait`` seconds)."""
        await self._channel.open(wait)

    async def close(self) -> None:
        """Close the sockets and every watch; pending operations fail with ``Unavailable``."""
        if self._watches is not None:
            await self._watches.close()
        await self._channel.close()

    @property
    def channel(self) -> Channel:
        """The underlying channel (leader target, retry counters)."""
        return self._channel

    # ------------------------------------------------------------------ writes

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0,
                  prev_kv: bool = False) -> PutResult:
        """Set ``key`` to ``value``; the result carries the new revision."""
        return await self._write([1, _key(key), _key(value), lease, prev_kv])

    async def delete(self, key: bytes | str) -> DeleteResult:
        """Delete ``key``; ``result.deleted`` is 0 when it did not exist."""
        return await self._write([2, _key(key)])

    async def delete_prefix(self, prefix: bytes | str) -> DeleteResult:
        """Delete every key under ``prefix``."""
        return await self._write([3, _key(prefix)])

    async def cas(self, key: bytes | str, value: bytes | str | None, *,
                  expect_value: bytes | str | None = None,
                  expect_mod_revision: int | None = None,
                  expect_absent: bool = False, lease: int = 0) -> CasResult:
        """Compare-and-swap (exactly one condition); ``value`` None deletes on success."""
        if (expect_value is not None) + (expect_mod_revision is not None) + expect_absent != 1:
            raise ValueError("cas needs exactly one of expect_value, expect_mod_revision, "
                             "expect_absent")
        if expect_value is not None:
            kind, expect = 0, _key(expect_value)
        elif expect_mod_revision is not None:
            kind, expect = 1, expect_mod_revision
        else:
            kind, expect = 2, None
        new = None if value is None else _key(value)
        return await self._write([4, _key(key), new, kind, expect, lease])

    async def _write(self, command: list) -> Any:
        session = self._session or await self._open_session()
        seq, ack = session.next()
        try:
            payload = await self._channel.call(
                wire.OP_WRITE, [[16, session.client_id, seq, ack, command]])
        finally:
            session.done(seq)
        result = self._result(payload)
        if type(result) is Rejected:
            if result.code in _UNKNOWN_OUTCOME:
                if self._session is session:
                    self._session = None  # the next write opens a new session
                raise OutcomeUnknown(f"write outcome unknown: {result.message}")
            raise RequestRejected(f"{result.code.name}: {result.message}", int(result.code))
        return result

    async def _open_session(self) -> _Session:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._do_open_session())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _do_open_session(self) -> _Session:
        result = self._result(await self._channel.call(wire.OP_WRITE, [_OPEN_SESSION]))
        if type(result) is not SessionOpened:
            raise Unavailable(f"could not open a session: {result}")
        self._session = _Session(result.client_id)
        return self._session

    @staticmethod
    def _result(payload: Any) -> Result:
        try:
            return result_from_wire(payload)
        except (KvDecodeError, ValueError) as exc:
            raise DecodeError(f"bad result from the name service: {exc}") from None

    # ------------------------------------------------------------------ reads

    async def get(self, key: bytes | str, *, consistent: bool = True) -> KeyValue | None:
        """The key-value of ``key`` (None if absent). ``consistent=False``: the value the node
        asked has applied, without a round to the leader (may be stale)."""
        payload = await self._channel.call(wire.OP_GET, [_key(key), consistent])
        try:
            kv, _revision = payload
            return None if kv is None else kv_from_wire(kv)
        except (KvDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad reply from the name service: {exc}") from None

    async def range(self, prefix: bytes | str = b"", *, limit: int = 0,
                    consistent: bool = True) -> list[KeyValue]:
        """Key-values under ``prefix`` sorted by key (at most ``limit`` when > 0)."""
        payload = await self._channel.call(wire.OP_RANGE, [_key(prefix), limit, consistent])
        try:
            kvs, _revision = payload
            return [kv_from_wire(kv) for kv in kvs]
        except (KvDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad reply from the name service: {exc}") from None

    async def range_revision(self, prefix: bytes | str = b"", *, limit: int = 0,
                             consistent: bool = True) -> tuple[list[KeyValue], int]:
        """Like ``range``, with the store revision the key-values were read at: a watch from
        that revision + 1 continues exactly where the range left off."""
        payload = await self._channel.call(wire.OP_RANGE, [_key(prefix), limit, consistent])
        try:
            kvs, revision = payload
            if type(revision) is not int:
                raise TypeError("the revision must be an int")
            return [kv_from_wire(kv) for kv in kvs], revision
        except (KvDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad reply from the name service: {exc}") from None

    # ------------------------------------------------------------------ watches

    def watch(self, key_or_prefix: bytes | str, *, prefix: bool = True,
              start_revision: int | None = None, max_queued: int = MAX_QUEUED) -> Watch:
        """Watch the changes of every key under a prefix (or of one key, ``prefix=False``).

        Events come from ``start_revision`` on (None: from when a node starts serving the
        watch; ``await watch.started()`` waits for that). The watch is served by any node and
        resumes on another from its last revision when that node fails, none missed or
        repeated (``client/watch.py``). ``await watch.close()`` ends it.
        """
        if start_revision is not None and start_revision < 0:
            raise ValueError("start_revision must not be negative")
        if self._watches is None:
            self._watches = WatchSet(self._channel)
        return self._watches.watch(_key(key_or_prefix), prefix, start_revision, max_queued)

    async def status(self, address: str, *, timeout: float = 1.0) -> dict:
        """The status of the node at ``address`` (asked directly, never redirected)."""
        payload = await self._channel.call(wire.OP_STATUS, [], address=address, timeout=timeout)
        if not isinstance(payload, dict):
            raise DecodeError("bad status reply from the name service")
        return payload
