"""Client sessions: remember recent results so that a retried request is never applied twice.

Theory of operation. A client opens a session (``OpenSession`` → ``client_id``) and numbers its
requests 1, 2, 3, ... Per session the table keeps:

* ``results``: seq → result of the requests applied recently, in the order they were applied;
* ``floor``: every seq <= floor has been seen and its result forgotten.

A request (client_id, seq) is then exactly one of:

* a duplicate — seq is in ``results``: answer the stored result, apply nothing;
* too old — seq <= floor and not in ``results``: answer ``SEQ_TOO_OLD``, apply nothing (the
  original may or may not have been applied; it cannot be told any more);
* new — apply it and store its result.

Results are forgotten when the client acknowledges them (``Request.ack``: it holds every result
up to ack), when a session holds more than ``window`` results (the oldest applied goes first),
and when the whole table holds more than ``max_results`` or ``max_sessions`` (the least recently
used session goes first, whole). A request for a forgotten session gets ``SESSION_EXPIRED`` and
is not applied. Everything is decided by the order of applied commands alone, so all replicas
forget the same things at the same point.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator

from ..errors import shown
from .results import Result

__all__ = ["ClientSession", "SessionTable"]


class ClientSession:
    """The remembered state of one client (mutable; owned by its ``SessionTable``)."""

    __slots__ = ("client_id", "floor", "results")

    def __init__(self, client_id: int, floor: int = 0) -> None:
        self.client_id = client_id
        self.floor = floor
        # An OrderedDict, not a dict: results leave from the front, and finding a plain dict's
        # first item scans every slot deleted before it (quadratic with a large window).
        self.results: OrderedDict[int, Result] = OrderedDict()


class SessionTable:
    """Every open session, least recently used first."""

    def __init__(self, max_sessions: int, window: int, max_results: int) -> None:
        if not 1 <= window <= max_results:
            raise ValueError("need 1 <= session window <= max cached results")
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.max_sessions = max_sessions
        self.window = window
        self.max_results = max_results
        self.last_client_id = 0
        self.cached_results = 0
        self.evicted = 0
        self._sessions: OrderedDict[int, ClientSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[ClientSession]:
        return iter(self._sessions.values())

    def open(self) -> int:
        """Start a session and return its new client id."""
        self.last_client_id += 1
        client_id = self.last_client_id
        self._sessions[client_id] = ClientSession(client_id)
        self._evict_over_bounds()
        return client_id

    def close(self, client_id: int) -> bool:
        """Forget a session; False if it was not open."""
        session = self._sessions.pop(client_id, None)
        if session is None:
            return False
        self.cached_results -= len(session.results)
        return True

    def touch(self, client_id: int) -> ClientSession | None:
        """The session, marked as the most recently used; None if unknown or expired."""
        session = self._sessions.get(client_id)
        if session is not None:
            self._sessions.move_to_end(client_id)
        return session

    def forget_through(self, session: ClientSession, ack: int) -> None:
        """The client holds every result up to ``ack``: raise the floor, drop those results."""
        if ack <= session.floor:
            return
        session.floor = ack
        results = session.results
        # Results sit in the order they were applied, which is seq order unless a client
        # retried out of order; a straggler left behind is dropped by the window later.
        while results:
            first = next(iter(results))
            if first > ack:
                break
            results.popitem(last=False)
            self.cached_results -= 1

    def record(self, session: ClientSession, seq: int, result: Result) -> None:
        """Remember ``result`` for ``seq`` and enforce the bounds."""
        if self._sessions.get(session.client_id) is not session:
            return  # the request closed its own session
        results = session.results
        results[seq] = result
        self.cached_results += 1
        if len(results) > self.window:
            oldest, _ = results.popitem(last=False)
            self.cached_results -= 1
            if oldest > session.floor:
                session.floor = oldest
        if self.cached_results > self.max_results:
            self._evict_over_bounds()

    def _evict_over_bounds(self) -> None:
        sessions = self._sessions
        while len(sessions) > self.max_sessions or (
            self.cached_results > self.max_results and len(sessions) > 1
        ):
            _, session = sessions.popitem(last=False)
            self.cached_results -= len(session.results)
            self.evicted += 1

    # --- snapshots ---

    def to_wire(self, result_to_wire: Callable[[Result], list[Any]]) -> list[Any]:
        """Plain data for a snapshot: sessions in LRU order, results in applied order."""
        return [
            self.last_client_id,
            [
                [s.client_id, s.floor, [[seq, result_to_wire(r)] for seq, r in s.results.items()]]
                for s in self._sessions.values()
            ],
        ]

    def load_wire(self, wire: Any, result_from_wire: Callable[[Any], Result]) -> None:
        """Replace the content with ``to_wire`` data (raises TypeError/ValueError if malformed)."""
        last_client_id, sessions_wire = wire
        _non_negative(last_client_id)
        sessions: OrderedDict[int, ClientSession] = OrderedDict()
        cached = 0
        for client_id, floor, results_wire in sessions_wire:
            _non_negative(client_id)
            _non_negative(floor)
            if not 0 < client_id <= last_client_id or client_id in sessions:
                raise ValueError(f"bad session id {client_id}")
            session = ClientSession(client_id, floor)
            for seq, result in results_wire:
                _non_negative(seq)
                session.results[seq] = result_from_wire(result)
            if len(session.results) != len(results_wire):
                raise ValueError(f"session {client_id} repeats a seq")
            cached += len(session.results)
            sessions[client_id] = session
        self.last_client_id = last_client_id
        self._sessions = sessions
        self.cached_results = cached


def _non_negative(value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"expected a non-negative int, got {shown(value)}")
