"""Per-client quotas a node enforces itself (pure: time is passed in).

"A client" is one connection to the node (its ROUTER identity) until keys give clients a name
of their own: quotas keyed by connection stop one connection from starving the others, and the
global bounds (plus the per-process connection count) bound what many connections can take.
Watch quotas live in the ``WatchHub``; lease quotas are replicated state (kv ``KeySpace``:
per session, decided identically on every replica). This module holds the one quota that is
the leader's alone: how many sessions a connection may open.

Sessions are replicated and evicted least recently used first, so a client opening sessions
by the thousand would evict everyone else's (their next write: ``SESSION_EXPIRED``). A
legitimate client opens one, and another only after losing it; so the leader lets each
connection open at most ``MAX_SESSIONS_PER_CLIENT`` per ``SESSION_WINDOW_S`` seconds.
"""
from __future__ import annotations

from collections import deque

__all__ = ["MAX_SESSIONS_PER_CLIENT", "SESSION_WINDOW_S", "SessionQuota"]

MAX_SESSIONS_PER_CLIENT = 64
"""Sessions one connection may open per window, at the leader."""
SESSION_WINDOW_S = 60.0
"""The window of ``MAX_SESSIONS_PER_CLIENT``."""


class SessionQuota:
    """The sessions each connection opened recently (forgotten once the window passed)."""

    def __init__(self, limit: int = MAX_SESSIONS_PER_CLIENT,
                 window_s: float = SESSION_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self.refused = 0
        self._opened: dict[bytes, deque[float]] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        return len(self._opened)

    def allow(self, identity: bytes, now: float) -> bool:
        """Whether ``identity`` may open a session now (counted if so, refused if not)."""
        opened = self._opened.get(identity)
        if opened is None:
            opened = self._opened[identity] = deque()
        while opened and opened[0] <= now - self.window_s:
            opened.popleft()
        if len(opened) >= self.limit:
            self.refused += 1
            return False
        opened.append(now)
        return True

    def prune(self, now: float) -> None:
        """Forget connections that opened nothing within the window (at most once a window)."""
        if now < self._next_prune:
            return
        self._next_prune = now + self.window_s
        horizon = now - self.window_s
        for identity in [i for i, opened in self._opened.items() if opened[-1] <= horizon]:
            del self._opened[identity]
