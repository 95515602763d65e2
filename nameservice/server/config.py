"""Settings of one name-service node and the parsers of its own options (timeouts, lease TTLs)."""
from __future__ import annotations

from dataclasses import dataclass

from nameservice.address import client_address, parse_control
from nameservice.errors import ConfigError
from nameservice.raft.types import Config

DEFAULT_TICK_MS = 10
DEFAULT_ELECTION_TIMEOUT_MS = (150, 300)
DEFAULT_HEARTBEAT_MS = 50
MIN_LEASE_TTL_MS = 1000
"""The shortest lease TTL a cluster grants by default (a shorter one asked for is raised)."""
LOWEST_MIN_LEASE_TTL_MS = 500
"""The lowest value ``--min-lease-ttl`` accepts (for tests)."""


def parse_min_lease_ttl(seconds: float) -> int:
    """``--min-lease-ttl`` seconds → milliseconds; ConfigError below 0.5 s."""
    ms = round(seconds * 1000)
    if not ms >= LOWEST_MIN_LEASE_TTL_MS:
        raise ConfigError(f"--min-lease-ttl {seconds:g}: the lowest allowed is "
                          f"{LOWEST_MIN_LEASE_TTL_MS / 1000:g} s")
    return ms


def parse_timeout_range(text: str) -> tuple[int, int]:
    """``LO-HI`` in milliseconds → ``(lo, hi)``; ConfigError unless 0 < lo <= hi."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise ConfigError(f"bad election timeout {text!r}: expected LO-HI in milliseconds")
    lo_ms, hi_ms = int(lo), int(hi)
    if not 0 < lo_ms <= hi_ms:
        raise ConfigError(f"bad election timeout {text!r}: need 0 < LO <= HI")
    return lo_ms, hi_ms


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Everything one node needs to run.

    ``cluster`` maps every member's id to the ``HOST:PORT`` it listens on (peers and clients
    share the port); ``learners`` are those of them that do not vote. Both only matter until
    the node's own log says otherwise: a node that holds a snapshot or configuration entries
    follows those (docs/raft.md, "Membership changes"). Times are in milliseconds; the Raft
    core counts ticks of ``tick_ms``.
    """

    id: int
    cluster: dict[int, str]
    data_dir: str
    election_timeout_ms: tuple[int, int] = DEFAULT_ELECTION_TIMEOUT_MS
    heartbeat_ms: int = 0  # 0: a third of the minimum election timeout, at most 50 ms
    tick_ms: int = 0  # 0: 10 ms, or less for election timeouts under 100 ms
    snapshot_threshold: int = 10_000
    # ... or once the entries since the last snapshot hold this much data: the log stays in
    # memory until compacted, so large values must compact it too.
    snapshot_bytes: int = 64 << 20
    # Where fsync runs: "thread" (a worker thread, the loop keeps receiving), "inline" (on the
    # loop thread: fewer thread hand-offs), "auto" (the leader in a thread, followers inline).
    sync_mode: str = "auto"
    # Leases shorter than this are raised to it; every node of a cluster must agree.
    min_lease_ttl_ms: int = MIN_LEASE_TTL_MS
    # The cluster name advertised with zeroconf, and whether to advertise at all.
    cluster_name: str = "default"
    advertise: bool = True
    history_events: int = 10_000  # events kept for watches resuming (local, per node)
    history_bytes: int = 64 << 20  # ... and about this many bytes of their keys and values
    # The node's fabric process name (registered as process/NAME; "" = ns-ID) and where its
    # control socket binds (HOST:PORT, port 0 for any; "" = the node's host, any port).
    name: str = ""
    control: str = ""
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.sync_mode not in ("thread", "inline", "auto"):
            raise ConfigError(f"unknown sync mode {self.sync_mode!r}")
        if self.history_events < 0 or self.history_bytes < 0:
            raise ConfigError("history_events and history_bytes must not be negative")
        if self.snapshot_threshold < 1 or self.snapshot_bytes < 1:
            raise ConfigError("snapshot_threshold and snapshot_bytes must be positive")
        if self.min_lease_ttl_ms < LOWEST_MIN_LEASE_TTL_MS:
            raise ConfigError(f"the minimum lease TTL must be at least "
                              f"{LOWEST_MIN_LEASE_TTL_MS} ms, got {self.min_lease_ttl_ms}")
        if not self.cluster_name or len(self.cluster_name) > 40 or not all(
                c.isalnum() or c in "-_." for c in self.cluster_name):
            raise ConfigError(f"bad cluster name {self.cluster_name!r}: use 1 to 40 letters, "
                              f"digits, '-', '_' or '.'")
        if self.name and (any(c.isspace() for c in self.name)
                          or any(not part for part in self.name.split("/"))):
            raise ConfigError(f"bad name {self.name!r}: no spaces, no empty '/' parts")
        if self.control:
            parse_control(self.control)
        if not set(self.learners) <= set(self.cluster) or set(self.learners) >= set(self.cluster):
            raise ConfigError("the learners must be members of the cluster list, and at least "
                              "one member must vote")
        if self.id not in self.cluster:
            raise ConfigError(f"node id {self.id} is not in the cluster list "
                              f"({', '.join(map(str, sorted(self.cluster)))})")

    @property
    def process_name(self) -> str:
        """The name the node registers as ``process/NAME``: ``name``, or ``ns-ID``."""
        return self.name or f"ns-{self.id}"

    @property
    def address(self) -> str:
        """This node's member address: ``HOST:PORT``, or ``HOST:PORT/PEERPORT`` with a peer
        port of its own."""
        return self.cluster[self.id]

    @property
    def client_address(self) -> str:
        """Where clients connect to this node: ``HOST:PORT``."""
        return client_address(self.cluster[self.id])

    def client_addresses(self) -> list[str]:
        """Where clients connect to each node of the start-up list."""
        return [client_address(member) for member in self.cluster.values()]

    def tick(self) -> int:
        """The tick length in milliseconds."""
        if self.tick_ms:
            return self.tick_ms
        lo = self.election_timeout_ms[0]
        return DEFAULT_TICK_MS if lo >= 100 else max(1, min(DEFAULT_TICK_MS, lo // 10))

    def raft_config(self) -> Config:
        """The Raft core's config: the millisecond settings converted to ticks."""
        tick = self.tick()
        lo, hi = (max(2, round(ms / tick)) for ms in self.election_timeout_ms)
        heartbeat_ms = self.heartbeat_ms or min(
            DEFAULT_HEARTBEAT_MS, self.election_timeout_ms[0] // 3
        )
        heartbeat = max(1, min(lo - 1, round(heartbeat_ms / tick)))
        voters = tuple(sorted(set(self.cluster) - set(self.learners)))
        return Config(id=self.id, voters=voters, learners=tuple(sorted(self.learners)),
                      election_timeout_min=lo,
                      election_timeout_max=max(lo, hi), heartbeat_interval=heartbeat)
