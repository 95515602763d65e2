"""Where the cluster keeps its state in the name service, and the records stored there.

    cluster/agents/HOST              an agent: labels, slots, address     (the agent's lease)
    cluster/manager                  the acting manager                   (the manager's lease)
    cluster/networks/NET             a deployed network's file            (revisioned)
    cluster/placements/NET/ID        where instance ID runs: host, gen, spec (manager's CAS)
    cluster/running/HOST/NET/ID      what an agent runs: gen, state, pid  (the agent's lease)
    cluster/unplaced/NET             instances with no host, and why      (the manager)
    cluster/members/NET              the network's process names (its start barrier; the
                                     manager writes it, fabric/runtime/peers.py reads it)

Every record is a msgpack map. A record that does not decode is skipped and counted by its
reader (``Decoded.bad``): whoever wrote it, one bad key never stops an agent or the manager.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = ["AGENTS", "MANAGER", "NETWORKS", "PLACEMENTS", "RUNNING", "AgentInfo", "Placement",
           "Running", "decode", "encode"]

ROOT = "cluster/"
AGENTS = ROOT + "agents/"
MANAGER = ROOT + "manager"
NETWORKS = ROOT + "networks/"
PLACEMENTS = ROOT + "placements/"
RUNNING = ROOT + "running/"
UNPLACED = ROOT + "unplaced/"

STATES = ("starting", "running", "draining", "exited", "failed")
"""What an agent says of an instance: started and not yet registered; registered (or, for
an instance that registers nothing, alive); asked to stop; exited 0; exited otherwise or
could not start (it is started again after a pause)."""


def encode(record: dict[str, Any]) -> bytes:
    """A record's bytes."""
    return msgpack.packb(record, use_bin_type=True)


def encode_list(items: list[str]) -> bytes:
    """A list's bytes (the members of a network)."""
    return msgpack.packb(items, use_bin_type=True)


def decode(value: bytes) -> dict[str, Any] | None:
    """A record, or None if the bytes are not a msgpack map."""
    try:
        found = msgpack.unpackb(value, raw=False, max_str_len=1 << 20, max_bin_len=1 << 20)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return found if isinstance(found, dict) else None


def _str_map(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict) or not all(type(k) is str and type(v) is str
                                              for k, v in value.items()):
        return None
    return dict(value)


@dataclass(frozen=True)
class AgentInfo:
    """A live agent as it registered. ``registration``: the create revision of its key — a
    new one each time the agent registers (after its lease was lost, or a restart)."""

    host: str
    address: str
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    registration: int = 0

    def to_record(self) -> dict[str, Any]:
        """The record under ``cluster/agents/HOST``."""
        return {"address": self.address, "slots": self.slots, "labels": self.labels,
                "pid": self.pid}

    @classmethod
    def from_record(cls, host: str, record: dict[str, Any], registration: int = 0
                    ) -> AgentInfo | None:
        """None if the record is malformed."""
        labels = _str_map(record.get("labels"))
        slots, address, pid = record.get("slots"), record.get("address"), record.get("pid", 0)
        if labels is None or type(slots) is not int or slots < 0 or type(address) is not str \
                or type(pid) is not int:
            return None
        return cls(host, address, slots, {**labels, "host": host}, pid, registration)


@dataclass(frozen=True)
class Placement:
    """Where one instance runs, and which incarnation: ``gen`` grows by one with every new
    process for the instance (placed again, moved, updated). ``spec`` is what the agent
    runs (``InstanceSpec.to_wire``), ``digest`` its digest. ``previous``: during a rolling
    update, the incarnation being replaced, ``{"host", "gen", "spec", "registration"}``, which
    keeps running until the new one runs. ``token``: the fencing token of the manager that
    wrote it. ``registration``: the registration of ``host``'s agent it was written for; an
    agent runs only what carries its current registration, so an agent back from a lost lease
    starts nothing until the manager has looked at it again (and perhaps moved it meanwhile).
    ``hold``: run nothing for now (a replica moving to another host is stopped first)."""

    network: str
    id: str
    host: str
    gen: int
    spec: dict[str, Any]
    digest: str
    token: int
    previous: dict[str, Any] | None = None
    registration: int = 0
    hold: bool = False

    def to_record(self) -> dict[str, Any]:
        """The record under ``cluster/placements/NET/ID``."""
        return {"host": self.host, "gen": self.gen, "spec": self.spec, "digest": self.digest,
                "token": self.token, "previous": self.previous,
                "registration": self.registration, "hold": self.hold}

    @classmethod
    def from_record(cls, network: str, ident: str, record: dict[str, Any]
                    ) -> Placement | None:
        """None if the record is malformed."""
        host, gen, spec = record.get("host"), record.get("gen"), record.get("spec")
        digest, token, previous = record.get("digest"), record.get("token"), \
            record.get("previous")
        registration, hold = record.get("registration", 0), record.get("hold", False)
        if type(host) is not str or type(gen) is not int or not isinstance(spec, dict) \
                or type(digest) is not str or type(token) is not int \
                or type(registration) is not int or type(hold) is not bool:
            return None
        if previous is not None and not (
                isinstance(previous, dict) and type(previous.get("host")) is str
                and type(previous.get("gen")) is int
                and isinstance(previous.get("spec"), dict)):
            return None
        return cls(network, ident, host, gen, spec, digest, token, previous, registration, hold)


@dataclass(frozen=True)
class Running:
    """What an agent reports of one incarnation it runs."""

    host: str
    network: str
    id: str
    gen: int
    state: str
    pid: int = 0
    exits: int = 0
    detail: str = ""

    def to_record(self) -> dict[str, Any]:
        """The record under ``cluster/running/HOST/NET/ID``."""
        return {"gen": self.gen, "state": self.state, "pid": self.pid, "exits": self.exits,
                "detail": self.detail}

    @classmethod
    def from_record(cls, host: str, network: str, ident: str, record: dict[str, Any]
                    ) -> Running | None:
        """None if the record is malformed."""
        gen, state, pid = record.get("gen"), record.get("state"), record.get("pid", 0)
        exits, detail = record.get("exits", 0), record.get("detail", "")
        if type(gen) is not int or state not in STATES or type(pid) is not int \
                or type(exits) is not int or type(detail) is not str:
            return None
        return cls(host, network, ident, gen, state, pid, exits, detail)


def placement_key(network: str, ident: str) -> str:
    """``cluster/placements/NET/ID``."""
    return f"{PLACEMENTS}{network}/{ident}"


def running_key(host: str, network: str, ident: str) -> str:
    """``cluster/running/HOST/NET/ID``."""
    return f"{RUNNING}{host}/{network}/{ident}"


def split(key: str, prefix: str, parts: int) -> list[str] | None:
    """The ``parts`` path segments of ``key`` after ``prefix``, or None if it has another
    shape."""
    if not key.startswith(prefix):
        return None
    found = key[len(prefix):].split("/")
    return found if len(found) == parts and all(found) else None
