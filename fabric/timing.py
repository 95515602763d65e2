"""Heartbeat timing and the failover decisions that depend on it (pure: ``now`` comes in)."""
from __future__ import annotations

from dataclasses import dataclass

from fabric.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Timing:
    """How often peers prove they live, and how long a peer may stay silent.

    A peer is declared dead after ``misses`` heartbeat intervals of silence; a *consumer* only
    after ``consumer_timeout`` (at least that). ``tick`` is how often each process checks its
    timers.

    Why consumers get longer: a wrong verdict on an intermediary is normally harmless
    (consumers claim what they hold before anything is resent), but a consumer wrongly
    declared dead — a process the host froze for half a second, which loaded virtual machines
    do — may already have handled what is then redelivered to another consumer, so the handler
    runs twice. The price: what a dead or hung consumer held waits ``consumer_timeout`` before it
    is redelivered; meanwhile the other consumers take all new work (it has no credit left).
    """

    heartbeat: float = 0.1
    misses: int = 3
    tick: float = 0.01
    consumer_timeout: float = 2.0

    def __post_init__(self) -> None:
        if (self.heartbeat <= 0 or self.misses < 1 or self.tick <= 0
                or self.consumer_timeout <= 0):
            raise ConfigError(f"invalid timing {self}")

    @property
    def timeout(self) -> float:
        """Silence after which a peer is declared dead."""
        return self.heartbeat * self.misses

    def is_silent(self, last_heard: float, now: float, *, consumer: bool = False) -> bool:
        """True when a peer last heard at ``last_heard`` has been silent too long (``consumer``:
        judged by the consumer timeout)."""
        limit = max(self.timeout, self.consumer_timeout) if consumer else self.timeout
        return now - last_heard > limit

    def frozen(self, gap: float) -> bool:
        """True when a process whose own timer fired ``gap`` seconds late was frozen long enough
        for its peers to have declared it dead. A peer's silence may have begun up to one
        heartbeat interval before the freeze (the last heartbeat it received), so the bar is
        one interval below the timeout."""
        return gap > max(self.heartbeat, self.timeout - self.heartbeat)
