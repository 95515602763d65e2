"""Placement: from the networks asked for, the live agents and the current placements, the
writes that bring the placements closer to what is asked. Pure: no I/O, no clock.

The rules (docs/cluster.md, "Placement"):

* An instance keeps its host while that agent lives and still satisfies its labels: nothing
  moves to rebalance (a running process is worth more than a tidy spread).
* An instance whose agent is gone (its lease expired: the agent is not in ``agents``) is
  placed again at once with the next ``gen``: the lost host's processes stopped themselves
  before its lease could expire (``fence.py``), so the two never run at once.
* A changed spec (run, params, version) is a rolling update, one instance of a component at
  a time. A function instance or an intermediary is made before it is broken: the new
  incarnation (``gen + 1``) starts while the old one, kept in ``previous``, runs on until
  the agent reports the new one running; then ``previous`` is cleared and its agent drains
  it. A stateful replica is broken before it is made, on the same host (it keeps its data),
  and only while every other replica of its group runs (one never placed counts as not
  running).
* An instance on an agent that no longer satisfies its labels moves the same way; a replica
  moving to another host is first *held* (its agent stops it) and placed on the new host
  once its old host reports nothing of it.
* Every placement carries the registration of its host's agent. An agent that registers
  again (it lost its lease and stopped everything) runs a placement only once the manager
  has stamped it with the new registration — so a move the manager decided while the agent
  was gone cannot race the agent's return.
* Hosts are chosen among the agents carrying every label, with a free slot, without another
  instance of the same component or channel when ``spread`` (else preferring hosts with the
  fewest), then the least loaded, then by name. An instance that fits nowhere stays
  unplaced, with the reason (``Plan.unplaced``), and is tried again on the next change.
* A placement whose network or instance is no longer asked for is deleted (its agent drains
  the process).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fabric.cluster.keys import AgentInfo, Placement, Running
from fabric.cluster.network import REPLICATED, InstanceSpec, Network

__all__ = ["Plan", "plan"]

Key = tuple[str, str]
"""(network, instance id)."""


@dataclass
class Plan:
    """What to write: ``writes`` are (network, id, new placement or None to delete, the mod
    revision the key must still have, 0 for absent); ``unplaced`` says why an instance has
    no host."""

    writes: list[tuple[str, str, Placement | None, int]] = field(default_factory=list)
    unplaced: dict[Key, str] = field(default_factory=dict)


def _fits_labels(spec: InstanceSpec, agent: AgentInfo) -> bool:
    return all(agent.labels.get(k) == v for k, v in spec.labels)


class _Hosts:
    """The live agents' load while a plan is made."""

    def __init__(self, agents: dict[str, AgentInfo]) -> None:
        self.agents = agents
        self.used: Counter[str] = Counter()
        self.groups: dict[tuple[str, str], Counter[str]] = {}

    def take(self, network: str, group: str, host: str, slots: int) -> None:
        self.used[host] += slots
        self.groups.setdefault((network, group), Counter())[host] += 1

    def choose(self, network: str, spec: InstanceSpec, prefer: str | None = None,
               own: str | None = None) -> str | None:
        """A host for ``spec`` (``prefer`` wins ties), or None. ``own``: the host the
        instance runs on now, where it is not its own sibling."""
        siblings = self.groups.get((network, spec.group), Counter())
        best: tuple | None = None
        for host, agent in self.agents.items():
            if not _fits_labels(spec, agent):
                continue
            if agent.slots - self.used[host] < spec.slots:
                continue
            others = siblings[host] - (host == own)
            if spec.spread and others > 0:
                continue
            load = self.used[host] / agent.slots if agent.slots else 0.0
            rank = (others, host != prefer, load, host)
            if best is None or rank < best[0]:
                best = (rank, host)
        return None if best is None else best[1]

    def why_not(self, spec: InstanceSpec) -> str:
        labelled = [a for a in self.agents.values() if _fits_labels(spec, a)]
        if not self.agents:
            return "no live agent"
        if not labelled:
            wanted = ", ".join(f"{k}={v}" for k, v in spec.labels)
            return f"no live agent has the labels {wanted}"
        if not any(a.slots - self.used[a.host] >= spec.slots for a in labelled):
            return "no free slot on the agents with its labels"
        return f"spread: every fitting agent already runs an instance of {spec.group}"


def plan(networks: dict[str, Network], agents: dict[str, AgentInfo],
         placements: dict[Key, tuple[Placement, int]], running: dict[tuple[str, str, str],
                                                                     Running],
         token: int) -> Plan:
    """The writes that bring ``placements`` closer to ``networks`` on ``agents`` (see the
    module docstring). ``placements`` map to (placement, mod revision); ``running`` is keyed
    by (host, network, id); ``token`` is the manager's fencing token, stamped on what it
    writes."""
    out = Plan()
    hosts = _Hosts(agents)
    specs = {name: net.by_id() for name, net in networks.items()}
    # Load first: what runs where, including incarnations being replaced.
    for (net, ident), (p, _rev) in placements.items():
        spec = specs.get(net, {}).get(ident)
        group = spec.group if spec else p.spec.get("group", ident)
        slots = spec.slots if spec else 1
        if p.host in agents:
            hosts.take(net, group, p.host, slots)
        if p.previous and p.previous["host"] in agents:
            hosts.used[p.previous["host"]] += slots
    for (net, ident), (_p, rev) in sorted(placements.items()):
        if ident not in specs.get(net, {}):
            out.writes.append((net, ident, None, rev))
    for net, network in networks.items():
        updating = _updating(network, placements)
        for spec in network.instances:
            found = placements.get((net, spec.id))
            if found is None:
                host = hosts.choose(net, spec)
                if host is None:
                    out.unplaced[(net, spec.id)] = hosts.why_not(spec)
                    continue
                hosts.take(net, spec.group, host, spec.slots)
                out.writes.append((net, spec.id, _placed(net, spec, host, 1, token, agents),
                                   0))
                continue
            p, rev = found
            step = _step(net, spec, p, agents, running, hosts, updating, placements, token)
            if isinstance(step, str):
                out.unplaced[(net, spec.id)] = step
            elif step is not None:
                out.writes.append((net, spec.id, step, rev))
    return out


def _placed(net: str, spec: InstanceSpec, host: str, gen: int, token: int,
            agents: dict[str, AgentInfo], previous: dict | None = None) -> Placement:
    return Placement(net, spec.id, host, gen, spec.to_wire(), spec.digest, token, previous,
                     agents[host].registration)


def _same(p: Placement, token: int, agents: dict[str, AgentInfo],
          previous: dict | None = None, hold: bool = False) -> Placement:
    """``p`` written again: stamped with its host's current registration."""
    return Placement(p.network, p.id, p.host, p.gen, p.spec, p.digest, token, previous,
                     agents[p.host].registration, hold)


def _current(previous: dict | None, agents: dict[str, AgentInfo]) -> bool:
    """Whether the incarnation being replaced may still run: its host's agent is the one
    it was placed with (an agent that lost its lease stopped everything it ran)."""
    if previous is None or previous["host"] not in agents:
        return False
    return previous.get("registration", 0) == agents[previous["host"]].registration


def _updating(network: Network, placements: dict[Key, tuple[Placement, int]]) -> set[str]:
    """The groups with a rolling update or a move in flight (an instance with a
    ``previous``, or held)."""
    return {spec.group for spec in network.instances
            if (found := placements.get((network.name, spec.id)))
            and (found[0].previous or found[0].hold)}


def _step(net: str, spec: InstanceSpec, p: Placement, agents: dict[str, AgentInfo],
          running: dict[tuple[str, str, str], Running], hosts: _Hosts, updating: set[str],
          placements: dict[Key, tuple[Placement, int]], token: int
          ) -> Placement | str | None:
    """The next placement of one placed instance: a new one, None (nothing to do) or a reason
    it cannot move on."""
    if p.hold:  # a replica moving: placed on its new host once the old one stopped
        if p.host in agents and (p.host, net, spec.id) in running:
            return None
        hosts.used[p.host] -= spec.slots if p.host in agents else 0
        target = hosts.choose(net, spec, own=p.host)
        if target is None:
            return hosts.why_not(spec)
        hosts.take(net, spec.group, target, spec.slots)
        return _placed(net, spec, target, p.gen + 1, token, agents)
    if _current(p.previous, agents):
        assert p.previous is not None
        if p.host not in agents:  # the new one's host is gone: try again elsewhere
            host = hosts.choose(net, spec)
            if host is None:
                return hosts.why_not(spec)
            hosts.take(net, spec.group, host, spec.slots)
            return _placed(net, spec, host, p.gen + 1, token, agents, previous=p.previous)
        if p.registration != agents[p.host].registration:
            return _same(p, token, agents, p.previous)
        mine = running.get((p.host, net, spec.id))
        if mine is not None and mine.gen == p.gen and mine.state == "running":
            return _same(p, token, agents)
        return None  # the new incarnation is not running yet
    if p.previous is not None and p.host in agents:  # the old one is gone
        return _same(p, token, agents)
    if p.host not in agents:
        host = hosts.choose(net, spec)
        if host is None:
            return hosts.why_not(spec)
        hosts.take(net, spec.group, host, spec.slots)
        return _placed(net, spec, host, p.gen + 1, token, agents)
    if p.registration != agents[p.host].registration:
        # Its agent registered again (it had lost its lease, and stopped everything): it runs
        # the placement only once stamped with its new registration.
        return _same(p, token, agents)
    moved = not _fits_labels(spec, agents[p.host])
    if not moved and p.digest == spec.digest:
        return None
    if spec.group in updating:
        return None  # one at a time
    if spec.kind in REPLICATED:
        siblings = [placements.get((net, f"{spec.group}-{'q' if spec.kind == 'queue' else 'r'}"
                                         f"{i}")) for i in range(spec.replicas)]
        for other in siblings:
            if other is not None and other[0].id == spec.id:
                continue
            state = running.get((other[0].host, net, other[0].id)) if other else None
            if other is None or state is None or state.gen != other[0].gen \
                    or state.state != "running":
                return None  # the group is not whole: wait
        updating.add(spec.group)
        if moved:  # broken before made: held (its agent stops it), then placed elsewhere
            return _same(p, token, agents, hold=True)
        return _placed(net, spec, p.host, p.gen + 1, token, agents)
    # Made before broken: the old one keeps its slot until the new one runs.
    host = hosts.choose(net, spec, prefer=None if moved else p.host, own=p.host)
    if host is None:
        return hosts.why_not(spec)
    hosts.take(net, spec.group, host, spec.slots)
    updating.add(spec.group)
    return _placed(net, spec, host, p.gen + 1, token, agents,
                   previous={"host": p.host, "gen": p.gen, "spec": p.spec,
                             "registration": p.registration})
