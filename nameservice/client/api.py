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

from nameservice import wire
from nameservice.address import client_address, parse_addresses
from nameservice.errors import (
    DecodeError,
    LeaseNotFound,
    NameServiceError,
    OutcomeUnknown,
    RequestRejected,
    Unavailable,
)
from nameservice.kv import (
    CasResult,
    DeleteResult,
    KeyValue,
    LeaseGrantResult,
    LeaseRevokeResult,
    PutResult,
    RejectCode,
    Rejected,
    Result,
    SessionOpened,
)
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv.codec import kv_from_wire, result_from_wire

from .addresses import cluster_addresses
from .channel import Channel
from .leases import LeaseKeeper
from .watch import MAX_QUEUED, Watch, WatchSet

MEMBERS_REFRESH_S = 5.0
"""How often a connected client asks for the members, to follow those that joined."""
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
    client learns the leader from redirects. None: ``$FABRIC_NS``, else the nodes zeroconf
    finds (looked up in ``connect``; see ``nameservice.client.addresses``). ``timeout``: how
    long one operation may take, retries included, before ``Unavailable``.
    ``attempt_timeout``: how long to wait for one node before trying the next.
    """

    def __init__(self, addresses: list[str] | str | None, *, timeout: float = 5.0,
                 attempt_timeout: float = 1.0, max_in_flight: int = 2048) -> None:
        if isinstance(addresses, str):
            addresses = parse_addresses(addresses)
        self._options: dict[str, Any] = dict(timeout=timeout, attempt_timeout=attempt_timeout,
                             max_in_flight=max_in_flight)
        self._channel: Channel | None = None
        if addresses is not None:
            self._channel = Channel(list(addresses), **self._options)
        self._session: _Session | None = None
        self._opening: asyncio.Future | None = None
        self._watches: WatchSet | None = None
        self._follower: asyncio.Task | None = None

    async def __aenter__(self) -> NameServiceClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self, wait: float | None = None) -> None:
        """Open the sockets; wait until some node is connected (at most ``wait`` seconds).

        A client made without addresses looks them up first (``Unavailable`` if none found).
        """
        if self._channel is None:
            addresses = await asyncio.to_thread(cluster_addresses, None)
            self._channel = Channel(addresses, **self._options)
        await self._channel.open(wait)
        if self._follower is None:
            self._follower = asyncio.ensure_future(self._follow_members())

    async def _follow_members(self) -> None:
        """Connect to members that joined (``members`` links them), every few seconds."""
        while True:
            await asyncio.sleep(MEMBERS_REFRESH_S)
            try:
                await self.members(timeout=self._chan().attempt_timeout)
            except NameServiceError:
                pass  # the cluster is busy or changing: next time

    async def close(self) -> None:
        """Close the sockets and every watch; pending operations fail with ``Unavailable``."""
        if self._follower is not None:
            self._follower.cancel()
            try:
                await self._follower
            except asyncio.CancelledError:
                pass
            self._follower = None
        if self._watches is not None:
            await self._watches.close()
        if self._channel is not None:
            await self._channel.close()

    @property
    def channel(self) -> Channel:
        """The underlying channel (leader target, retry counters); made by ``connect`` for a
        client created without addresses."""
        return self._chan()

    def _chan(self) -> Channel:
        channel = self._channel
        assert channel is not None, "connect() a client made without addresses first"
        return channel

    # ------------------------------------------------------------------ writes

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0,
                  prev_kv: bool = False, consistent: bool = True) -> PutResult:
        """Set ``key`` to ``value``; the result carries the new revision.

        ``lease``: attach the key to this lease (``LeaseNotFound`` if it does not exist).
        ``consistent=False``: a quorum-less write, accepted and kept on disk by the node asked
        even when the cluster has no quorum, and replicated once a leader is reachable; the
        result's revision is 0 (not yet in the log). If the key changed meanwhile through the
        log, the write is dropped as a conflict (docs/kv.md, "Quorum-less writes"). It cannot
        attach a lease or return the previous value.
        """
        if not consistent:
            if lease or prev_kv:
                raise ValueError("a quorum-less put cannot attach a lease or return prev_kv")
            await self._stale_write(_key(key), _key(value))
            return PutResult(0)
        return await self._write([1, _key(key), _key(value), lease, prev_kv])

    async def delete(self, key: bytes | str, *, consistent: bool = True) -> DeleteResult:
        """Delete ``key``; ``result.deleted`` is 0 when it did not exist.

        ``consistent=False``: a quorum-less delete (see ``put``); ``deleted`` then says whether
        the key existed as the node asked saw it, and the revision is 0.
        """
        if not consistent:
            existed = await self._stale_write(_key(key), None)
            return DeleteResult(0, int(existed))
        return await self._write([2, _key(key)])

    async def _stale_write(self, key: bytes, value: bytes | None) -> bool:
        payload = await self._chan().call(wire.OP_STALE_WRITE, [key, value])
        if type(payload) is not bool:
            raise DecodeError("bad reply to a quorum-less write")
        return payload

    async def stale_write(self, key: bytes, value: bytes | None,
                          base_mod_revision: int) -> CasResult:
        """Propose a node's pending quorum-less write through the log (what nodes replay;
        applied only if the key's mod_revision is still ``base_mod_revision``)."""
        return await self._write([5, key, value, base_mod_revision])

    # ------------------------------------------------------------------ leases

    async def lease_grant(self, ttl: float) -> int:
        """Grant a lease of ``ttl`` seconds (raised to the cluster's minimum); its id.

        Keys attached to it are deleted when it expires: when no keepalive reached the leader
        for a whole TTL. ``keep_alive`` does the renewing for you.
        """
        if not ttl > 0:
            raise ValueError(f"a lease TTL must be positive, got {ttl!r}")
        result = await self._write([6, 0, max(1, round(ttl * 1000))])
        if type(result) is not LeaseGrantResult:
            raise DecodeError(f"bad reply to a lease grant: {result}")
        return result.id

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None,
                              attempt_timeout: float | None = None) -> float:
        """Renew a lease on the leader; its TTL in seconds. ``LeaseNotFound`` if it is gone.

        ``timeout`` / ``attempt_timeout`` override the client's for this call (a keeper of a
        short lease must give up on a silent leader sooner than other calls do)."""
        payload = await self._chan().call(wire.OP_KEEPALIVE, [lease_id], timeout=timeout,
                                          attempt_timeout=attempt_timeout)
        if type(payload) is not int or payload < 0:
            raise DecodeError("bad reply to a keepalive")
        if payload == 0:
            raise LeaseNotFound(lease_id)
        return payload / 1000.0

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> bool:
        """Revoke a lease, deleting its keys; False if it did not exist."""
        result = await self._write([7, lease_id], timeout)
        if type(result) is not LeaseRevokeResult:
            raise DecodeError(f"bad reply to a lease revoke: {result}")
        return result.found

    def keep_alive(self, ttl: float) -> LeaseKeeper:
        """A lease of ``ttl`` seconds renewed in the background: ``async with`` grants it,
        renews it every ttl/3 and revokes it on exit; ``.id``, ``.lost`` (see LeaseKeeper)."""
        return LeaseKeeper(self, ttl)

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
        expect: bytes | int | None
        if expect_value is not None:
            kind, expect = 0, _key(expect_value)
        elif expect_mod_revision is not None:
            kind, expect = 1, expect_mod_revision
        else:
            kind, expect = 2, None
        new = None if value is None else _key(value)
        return await self._write([4, _key(key), new, kind, expect, lease])

    async def _write(self, command: list, timeout: float | None = None) -> Any:
        session = self._session or await self._open_session()
        seq, ack = session.next()
        try:
            payload = await self._chan().call(
                wire.OP_WRITE, [[16, session.client_id, seq, ack, command]], timeout=timeout)
        finally:
            session.done(seq)
        result = self._result(payload)
        if type(result) is Rejected:
            if result.code in _UNKNOWN_OUTCOME:
                if self._session is session:
                    self._session = None  # the next write opens a new session
                raise OutcomeUnknown(f"write outcome unknown: {result.message}")
            if result.code == RejectCode.LEASE_NOT_FOUND:
                raise LeaseNotFound(command[3] if command[0] == 1 else command[-1],
                                    int(result.code))
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
        result = self._result(await self._chan().call(wire.OP_WRITE, [_OPEN_SESSION]))
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
        payload = await self._chan().call(wire.OP_GET, [_key(key), consistent])
        try:
            kv, _revision = payload
            return None if kv is None else kv_from_wire(kv)
        except (KvDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad reply from the name service: {exc}") from None

    async def range(self, prefix: bytes | str = b"", *, limit: int = 0,
                    consistent: bool = True) -> list[KeyValue]:
        """Key-values under ``prefix`` sorted by key (at most ``limit`` when > 0)."""
        payload = await self._chan().call(wire.OP_RANGE, [_key(prefix), limit, consistent])
        try:
            kvs, _revision = payload
            return [kv_from_wire(kv) for kv in kvs]
        except (KvDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"bad reply from the name service: {exc}") from None

    async def range_revision(self, prefix: bytes | str = b"", *, limit: int = 0,
                             consistent: bool = True) -> tuple[list[KeyValue], int]:
        """Like ``range``, with the store revision the key-values were read at: a watch from
        that revision + 1 continues exactly where the range left off."""
        payload = await self._chan().call(wire.OP_RANGE, [_key(prefix), limit, consistent])
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
            self._watches = WatchSet(self._chan())
        return self._watches.watch(_key(key_or_prefix), prefix, start_revision, max_queued)

    # ------------------------------------------------------------------ membership

    async def members(self, *, address: str | None = None, timeout: float | None = None
                      ) -> dict:
        """The configuration: ``{"members": [{"id", "address", "role", "match", "lag"}...],
        "id" (the node that answered), "leader", "term", "pending_change"}``. Asked of the
        leader when one is known (only it reports ``match`` and ``lag``), else of whichever node
        answers; ``address`` pins the question to one node. The client connects to every
        member listed, so it follows members that joined."""
        payload = await self._members_of(address, timeout)
        leader = payload.get("leader")
        if address is None and leader and payload.get("id") != leader:
            where = [m.get("address") for m in payload["members"]
                     if isinstance(m, dict) and m.get("id") == leader]
            if where and isinstance(where[0], str) and where[0]:
                try:
                    payload = await self._members_of(client_address(where[0]), timeout)
                except NameServiceError:
                    pass  # the leader did not answer: the follower's view will do
        self._learn(payload)
        return payload

    def _learn(self, payload: dict) -> None:
        """Connect to every member a MEMBERS map lists."""
        self._chan().learn([client_address(m["address"]) for m in payload["members"]
                            if isinstance(m, dict) and isinstance(m.get("address"), str)
                            and m["address"]])

    async def _members_of(self, address: str | None, timeout: float | None) -> dict:
        payload = await self._chan().call(wire.OP_MEMBERS, [], address=address,
                                          timeout=timeout)
        if not isinstance(payload, dict) or not isinstance(payload.get("members"), list):
            raise DecodeError("bad MEMBERS reply from the name service")
        return payload

    async def member_change(self, kind: int, node: int, address: str = "", *,
                            timeout: float | None = None) -> dict:
        """Add a learner (``wire.MEMBER_ADD_LEARNER``, with its ``HOST:PORT``), promote a
        learner (``MEMBER_PROMOTE``) or remove a member (``MEMBER_REMOVE``); returns the
        configuration once the change is applied on the leader (as ``members``). A change in
        force already returns at once. ``RequestRejected`` with the reason when refused."""
        payload = await self._chan().call(wire.OP_MEMBER_CHANGE, [kind, node, address],
                                          timeout=timeout)
        if not isinstance(payload, dict) or not isinstance(payload.get("members"), list):
            raise DecodeError("bad MEMBER_CHANGE reply from the name service")
        self._learn(payload)  # the members that joined, before those it knew are removed
        return payload

    async def status(self, address: str, *, timeout: float = 1.0) -> dict:
        """The status of the node at ``address`` (asked directly, never redirected)."""
        payload = await self._chan().call(wire.OP_STATUS, [], address=address, timeout=timeout)
        if not isinstance(payload, dict):
            raise DecodeError("bad status reply from the name service")
        return payload
