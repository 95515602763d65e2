"""Placement rules (fabric/cluster/placement.py), each on small hand-built inputs; plans are fed
back into the placements to check the multi-round behaviour (rolling updates, convergence)."""
from __future__ import annotations

import pytest

from fabric.cluster.keys import AgentInfo, Placement, Running
from fabric.cluster.network import Network, parse_network
from fabric.cluster.placement import Plan, plan

TOKEN = 77

Placements = dict[tuple[str, str], tuple[Placement, int]]
RunningMap = dict[tuple[str, str, str], Running]


# --- helpers ---------------------------------------------------------------------------------

def agent(host: str, slots: int = 4, **labels: str) -> AgentInfo:
    """An agent as the manager reads it (``from_record`` adds ``host = NAME``)."""
    found = AgentInfo.from_record(host, {"address": f"tcp://{host}:5000", "slots": slots,
                                         "labels": labels})
    assert found is not None
    return found


def agents(*found: AgentInfo) -> dict[str, AgentInfo]:
    return {a.host: a for a in found}


def network(body: str, name: str = "net") -> Network:
    return parse_network(body, name=name)


def function(group: str = "producer", instances: int = 3, extra: str = "") -> str:
    return f'[components.{group}]\nrun = "m:f"\ninstances = {instances}\n{extra}\n'


def stateful(group: str = "ledger", replicas: int = 3, extra: str = "") -> str:
    return f'[components.{group}]\nrun = "m:C"\nreplicas = {replicas}\n{extra}\n'


def nets(*found: Network) -> dict[str, Network]:
    return {n.name: n for n in found}


def placed(net: Network, ident: str, host: str, gen: int = 1, rev: int = 10,
           previous: dict | None = None) -> tuple[tuple[str, str], tuple[Placement, int]]:
    """A placement of ``ident`` as the current ``net`` asks for it (same digest)."""
    spec = net.by_id()[ident]
    return (net.name, ident), (Placement(net.name, ident, host, gen, spec.to_wire(),
                                         spec.digest, 1, previous), rev)


def place_all(net: Network, hosts: dict[str, str], gen: int = 1) -> Placements:
    """Every instance id in ``hosts`` placed on its host, revisions 10, 11, ..."""
    return dict(placed(net, ident, host, gen, rev=10 + i)
                for i, (ident, host) in enumerate(hosts.items()))


def apply(placements: Placements, made: Plan) -> Placements:
    """The placements after ``made``'s writes, each checked against its CAS revision, new
    revisions counting up from the highest."""
    out = dict(placements)
    rev = max((r for _, r in out.values()), default=0)
    for net, ident, placement, expect in made.writes:
        current = out.get((net, ident))
        assert (current[1] if current else 0) == expect, f"CAS of {net}/{ident} would fail"
        if placement is None:
            del out[(net, ident)]
        else:
            rev += 1
            out[(net, ident)] = (placement, rev)
    return out


def run_all(placements: Placements, state: str = "running") -> RunningMap:
    """Every placement reported at its gen on its host (and ``previous`` still running)."""
    out: RunningMap = {}
    for (net, ident), (p, _rev) in placements.items():
        if p.previous:
            prev = p.previous
            out[(prev["host"], net, ident)] = Running(prev["host"], net, ident, prev["gen"],
                                                      "running")
        out[(p.host, net, ident)] = Running(p.host, net, ident, p.gen, state)
    return out


def report(host: str, net: str, ident: str, gen: int, state: str = "running"
           ) -> tuple[tuple[str, str, str], Running]:
    return (host, net, ident), Running(host, net, ident, gen, state)


def writes_by_id(made: Plan) -> dict[str, Placement | None]:
    return {ident: p for _net, ident, p, _rev in made.writes}


def hosts_of(placements: Placements) -> dict[str, str]:
    return {ident: p.host for (_net, ident), (p, _rev) in placements.items()}


# --- first placement -------------------------------------------------------------------------

def test_first_placement_spreads_a_spread_group_and_leaves_the_rest_unplaced():
    net = network(stateful(replicas=3))
    made = plan(nets(net), agents(agent("a"), agent("b")), {}, {}, TOKEN)
    got = writes_by_id(made)
    assert set(got) == {"ledger-r0", "ledger-r1"}
    assert {p.host for p in got.values() if p} == {"a", "b"}
    assert all(p is not None and p.gen == 1 and p.previous is None for p in got.values())
    assert list(made.unplaced) == [("net", "ledger-r2")]
    assert "spread" in made.unplaced[("net", "ledger-r2")]


def test_intermediaries_are_spread_by_default():
    net = network('[channels.orders]\nintermediaries = 3\n')
    made = plan(nets(net), agents(agent("a"), agent("b"), agent("c")), {}, {}, TOKEN)
    assert sorted(p.host for p in writes_by_id(made).values() if p) == ["a", "b", "c"]
    assert made.unplaced == {}


def test_first_placement_writes_the_spec_and_digest():
    net = network(function(instances=1, extra='params = { a = "1" }'))
    made = plan(nets(net), agents(agent("a")), {}, {}, TOKEN)
    [(name, ident, p, rev)] = made.writes
    spec = net.by_id()["producer-0"]
    assert (name, ident, rev) == ("net", "producer-0", 0)
    assert p is not None
    assert (p.network, p.id, p.host, p.gen) == ("net", "producer-0", "a", 1)
    assert p.spec == spec.to_wire() and p.digest == spec.digest


def test_non_spread_instances_share_a_host_when_it_is_the_only_one():
    net = network(function(instances=3))
    made = plan(nets(net), agents(agent("a", slots=4)), {}, {}, TOKEN)
    assert [p.host for p in writes_by_id(made).values() if p] == ["a", "a", "a"]
    assert made.unplaced == {}


def test_non_spread_instances_prefer_the_least_loaded_host():
    """``a`` is half full with another network's instances: the new one goes to ``b``, and
    load is relative to each agent's slots."""
    other = network(function("busy", instances=2), name="other")
    net = network(function(instances=1))
    current = place_all(other, {"busy-0": "a", "busy-1": "a"})
    made = plan(nets(other, net), agents(agent("a", slots=4), agent("b", slots=4)), current,
                {}, TOKEN)
    [(_net, ident, p, _rev)] = made.writes
    assert (ident, p.host) == ("producer-0", "b")
    # b: 1 of 2 slots used (0.5) is more loaded than a: 2 of 10 (0.2)
    other = network(function("busy", instances=3), name="other")
    current = place_all(other, {"busy-0": "a", "busy-1": "a", "busy-2": "b"})
    made = plan(nets(other, net), agents(agent("a", slots=10), agent("b", slots=2)), current,
                {}, TOKEN)
    assert writes_by_id(made)["producer-0"].host == "a"


def test_non_spread_instances_spread_when_they_can():
    net = network(function(instances=4))
    made = plan(nets(net), agents(agent("a"), agent("b")), {}, {}, TOKEN)
    hosts = [p.host for p in writes_by_id(made).values() if p]
    assert sorted(hosts) == ["a", "a", "b", "b"]


def test_ties_go_to_the_first_host_by_name():
    net = network(function(instances=1))
    made = plan(nets(net), agents(agent("c"), agent("b"), agent("a")), {}, {}, TOKEN)
    assert writes_by_id(made)["producer-0"].host == "a"


# --- labels and slots ------------------------------------------------------------------------

def test_labels_constrain_the_hosts():
    net = network(function(instances=2, extra='labels = { disk = "ssd" }'))
    made = plan(nets(net), agents(agent("a"), agent("b", disk="ssd"), agent("c", disk="hdd")),
                {}, {}, TOKEN)
    assert [p.host for p in writes_by_id(made).values() if p] == ["b", "b"]


def test_every_label_must_match():
    net = network(function(instances=1, extra='labels = { disk = "ssd", zone = "x" }'))
    made = plan(nets(net), agents(agent("a", disk="ssd"), agent("b", zone="x"),
                                  agent("c", disk="ssd", zone="x", extra="1")), {}, {}, TOKEN)
    assert writes_by_id(made)["producer-0"].host == "c"


def test_no_agent_with_the_labels_leaves_the_instance_unplaced_with_the_reason():
    net = network(function(instances=1, extra='labels = { disk = "ssd" }'))
    made = plan(nets(net), agents(agent("a"), agent("b", disk="hdd")), {}, {}, TOKEN)
    assert made.writes == []
    assert made.unplaced == {("net", "producer-0"): "no live agent has the labels disk=ssd"}


def test_the_host_label_pins_an_instance():
    assert agent("c").labels == {"host": "c"}
    net = network(stateful(replicas=1, extra='labels = { host = "c" }'))
    made = plan(nets(net), agents(agent("a"), agent("b"), agent("c")), {}, {}, TOKEN)
    assert writes_by_id(made)["ledger-r0"].host == "c"


def test_an_agent_cannot_fake_another_host_label():
    """``from_record`` sets ``host`` from the key, over whatever label the record has."""
    found = AgentInfo.from_record("a", {"address": "tcp://a:5000", "slots": 1,
                                        "labels": {"host": "c"}})
    assert found is not None and found.labels == {"host": "a"}


def test_slots_are_respected():
    net = network(function(instances=3, extra="slots = 2"))
    made = plan(nets(net), agents(agent("a", slots=3), agent("b", slots=4)), {}, {}, TOKEN)
    assert sorted(p.host for p in writes_by_id(made).values() if p) == ["a", "b", "b"]
    net = network(function(instances=4, extra="slots = 2"))
    made = plan(nets(net), agents(agent("a", slots=3), agent("b", slots=4)), {}, {}, TOKEN)
    assert len(made.writes) == 3
    assert made.unplaced == {("net", "producer-3"): "no free slot on the agents with its labels"}


def test_slots_used_by_existing_placements_count():
    other = network(function("busy", instances=2), name="other")
    net = network(function(instances=1))
    current = place_all(other, {"busy-0": "a", "busy-1": "a"})
    made = plan(nets(other, net), agents(agent("a", slots=2)), current, {}, TOKEN)
    assert made.writes == []
    assert made.unplaced == {("net", "producer-0"): "no free slot on the agents with its labels"}


def test_an_agent_with_no_slots_gets_nothing():
    net = network(function(instances=3) + stateful(replicas=1) + "[channels.c]\n")
    made = plan(nets(net), agents(agent("a", slots=0), agent("b", slots=10)), {}, {}, TOKEN)
    assert {p.host for p in writes_by_id(made).values() if p} == {"b"}
    made = plan(nets(net), agents(agent("a", slots=0)), {}, {}, TOKEN)
    assert made.writes == []
    assert set(made.unplaced.values()) == {"no free slot on the agents with its labels"}


def test_no_agent_at_all():
    made = plan(nets(network(function(instances=1))), {}, {}, {}, TOKEN)
    assert made.writes == []
    assert made.unplaced == {("net", "producer-0"): "no live agent"}


# --- lost agents -----------------------------------------------------------------------------

def test_an_instance_whose_agent_is_gone_is_placed_again_on_a_live_host():
    """Only the lost instance moves (gen + 1, to the one host without a sibling); the rest
    stay where they are."""
    net = network(stateful(replicas=3) + function(instances=2))
    current = place_all(net, {"ledger-r0": "a", "ledger-r1": "b", "producer-0": "a",
                              "producer-1": "b"})
    current.update([placed(net, "ledger-r2", "c", gen=3, rev=40)])
    made = plan(nets(net), agents(agent("a"), agent("b"), agent("d")), current,
                run_all(current), TOKEN)
    assert len(made.writes) == 1
    name, ident, p, rev = made.writes[0]
    assert (name, ident, rev) == ("net", "ledger-r2", 40)
    assert p is not None and (p.host, p.gen, p.previous) == ("d", 4, None)
    assert made.unplaced == {}


def test_lost_function_instances_go_to_the_least_loaded_hosts():
    net = network(function(instances=4))
    current = place_all(net, {"producer-0": "a", "producer-1": "b", "producer-2": "c",
                              "producer-3": "c"})
    made = plan(nets(net), agents(agent("a"), agent("b"), agent("d")), current, {}, TOKEN)
    got = writes_by_id(made)
    assert set(got) == {"producer-2", "producer-3"}
    # producer-2: d has no sibling; producer-3: all equal, the first by name
    assert (got["producer-2"].host, got["producer-3"].host) == ("d", "a")
    assert all(p is not None and p.gen == 2 for p in got.values())


def test_a_lost_instance_with_no_room_is_unplaced_and_not_written():
    net = network(stateful(replicas=3))
    current = place_all(net, {"ledger-r0": "a", "ledger-r1": "b", "ledger-r2": "c"})
    made = plan(nets(net), agents(agent("a"), agent("b")), current, {}, TOKEN)
    assert made.writes == []
    assert "spread" in made.unplaced[("net", "ledger-r2")]


def test_no_rebalance_when_an_agent_joins():
    net = network(function(instances=3) + stateful(replicas=1))
    current = place_all(net, {"producer-0": "a", "producer-1": "a", "producer-2": "a",
                              "ledger-r0": "a"})
    made = plan(nets(net), agents(agent("a"), agent("b"), agent("c")), current,
                run_all(current), TOKEN)
    assert made.writes == [] and made.unplaced == {}


# --- rolling update of a function group ------------------------------------------------------

V1, V2 = 'params = { rate = "1" }', 'params = { rate = "2" }'


def _function_update():
    old, new = network(function(extra=V1)), network(function(extra=V2))
    current = place_all(old, {"producer-0": "a", "producer-1": "b", "producer-2": "c"})
    return old, new, current, agents(agent("a"), agent("b"), agent("c"))


def test_changed_params_update_one_function_instance_made_before_broken():
    old, new, current, live = _function_update()
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    assert len(made.writes) == 1
    name, ident, p, rev = made.writes[0]
    assert (name, ident, rev) == ("net", "producer-0", 10)
    assert p is not None
    assert (p.host, p.gen, p.digest) == ("a", 2, new.by_id()["producer-0"].digest)
    assert p.spec["params"] == {"rate": "2"}
    assert p.previous == {"host": "a", "gen": 1, "spec": old.by_id()["producer-0"].to_wire(),
                          "registration": 0}


def test_an_update_goes_elsewhere_when_its_host_has_no_free_slot():
    old, new, current, _ = _function_update()
    live = agents(agent("a", slots=1), agent("b", slots=1), agent("c", slots=1),
                  agent("d", slots=1))
    p = writes_by_id(plan(nets(new), live, current, run_all(current), TOKEN))["producer-0"]
    assert p is not None and (p.host, p.gen, p.previous["host"]) == ("d", 2, "a")


def test_the_rest_of_the_group_waits_while_an_update_is_in_flight():
    _old, new, current, live = _function_update()
    current = apply(current, plan(nets(new), live, current, run_all(current), TOKEN))
    running = dict(run_all(current))
    running.update([report("a", "net", "producer-0", 2, "starting")])
    made = plan(nets(new), live, current, running, TOKEN)
    assert made.writes == [] and made.unplaced == {}
    # the old incarnation reported, the new one not at all: still waiting
    del running[("a", "net", "producer-0")]
    assert plan(nets(new), live, current, running, TOKEN).writes == []


def test_previous_is_cleared_once_the_new_gen_runs_then_the_next_instance_is_updated():
    _old, new, current, live = _function_update()
    current = apply(current, plan(nets(new), live, current, run_all(current), TOKEN))
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    assert len(made.writes) == 1
    name, ident, p, rev = made.writes[0]
    assert (ident, rev) == ("producer-0", current[("net", "producer-0")][1])
    assert p is not None and (p.host, p.gen, p.previous, p.token) == ("a", 2, None, TOKEN)
    current = apply(current, made)
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    got = writes_by_id(made)
    assert list(got) == ["producer-1"]
    assert got["producer-1"].gen == 2 and got["producer-1"].previous["host"] == "b"


def test_the_new_gen_running_on_another_host_does_not_clear_previous():
    _old, new, current, live = _function_update()
    current = apply(current, plan(nets(new), live, current, run_all(current), TOKEN))
    running = dict([report("a", "net", "producer-0", 1), report("b", "net", "producer-0", 2)])
    assert plan(nets(new), live, current, running, TOKEN).writes == []


def test_previous_is_cleared_when_the_previous_host_is_gone():
    old, new, current, _ = _function_update()
    live = agents(agent("a", slots=1), agent("b", slots=1), agent("c", slots=1),
                  agent("d", slots=1))
    current = apply(current, plan(nets(new), live, current, {}, TOKEN))
    assert current[("net", "producer-0")][0].previous["host"] == "a"
    del live["a"]
    made = plan(nets(new), live, current, {}, TOKEN)
    got = writes_by_id(made)
    assert list(got) == ["producer-0"]
    assert (got["producer-0"].host, got["producer-0"].gen, got["producer-0"].previous) == \
        ("d", 2, None)


def test_an_update_whose_new_host_is_gone_is_not_left_on_the_dead_host():
    """Rule: an instance whose agent is gone is placed again at once. Here the new
    incarnation's host (d) dies while the old one still runs on a: the plan must not write
    the instance onto d, nor drop the running old incarnation for nothing."""
    old, new, current, _ = _function_update()
    live = agents(agent("a", slots=1), agent("b", slots=1), agent("c", slots=1),
                  agent("d", slots=1), agent("e", slots=1))
    current = apply(current, plan(nets(new), live, current, {}, TOKEN))
    assert current[("net", "producer-0")][0].host == "d"
    del live["d"]
    made = plan(nets(new), live, current, {}, TOKEN)
    for _net, _ident, p, _rev in made.writes:
        assert p is None or p.host in live


def test_an_intermediary_update_is_made_before_broken():
    old = network('[channels.orders]\nintermediaries = 2\nversion = "1"\n')
    new = network('[channels.orders]\nintermediaries = 2\nversion = "2"\n')
    current = place_all(old, {"orders-i0": "a", "orders-i1": "b"})
    live = agents(agent("a", slots=1), agent("b", slots=1), agent("c", slots=1))
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    got = writes_by_id(made)
    assert list(got) == ["orders-i0"]
    # a has no free slot, b runs a sibling (spread): c
    assert (got["orders-i0"].host, got["orders-i0"].gen, got["orders-i0"].previous["host"]) \
        == ("c", 2, "a")


# --- rolling update of a stateful group ------------------------------------------------------

def _stateful_update():
    old = network(stateful(extra='version = "1"'))
    new = network(stateful(extra='version = "2"'))
    current = place_all(old, {"ledger-r0": "a", "ledger-r1": "b", "ledger-r2": "c"})
    return old, new, current, agents(agent("a"), agent("b"), agent("c"), agent("d"))


def test_a_replica_update_is_broken_before_made_on_the_same_host():
    _old, new, current, live = _stateful_update()
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    assert len(made.writes) == 1
    name, ident, p, rev = made.writes[0]
    assert (ident, rev) == ("ledger-r0", 10)
    assert p is not None
    assert (p.host, p.gen, p.previous, p.digest) == ("a", 2, None,
                                                      new.by_id()["ledger-r0"].digest)


BAD_STATES = [None, ("c", 1, "starting"), ("c", 0, "running"), ("c", 1, "failed"),
              ("d", 1, "running")]
BAD_IDS = ["no-report", "starting", "older-gen", "failed", "other-host"]


def _with_r2(running: RunningMap, r2: tuple | None) -> RunningMap:
    if r2:
        running.update([report(r2[0], "net", "ledger-r2", r2[1], r2[2])])
    return running


@pytest.mark.parametrize("r2", BAD_STATES, ids=BAD_IDS)
def test_a_replica_update_waits_until_every_other_replica_runs(r2):
    """r2 does not run at gen 1 on c: r0 and r1 wait; r2 itself (all its siblings run) is
    the one updated."""
    _old, new, current, live = _stateful_update()
    running = _with_r2(dict([report("a", "net", "ledger-r0", 1),
                             report("b", "net", "ledger-r1", 1)]), r2)
    assert list(writes_by_id(plan(nets(new), live, current, running, TOKEN))) == ["ledger-r2"]


@pytest.mark.parametrize("r2", BAD_STATES, ids=BAD_IDS)
def test_no_replica_is_updated_while_two_do_not_run(r2):
    _old, new, current, live = _stateful_update()
    running = _with_r2(dict([report("a", "net", "ledger-r0", 1),
                             report("b", "net", "ledger-r1", 1, "starting")]), r2)
    assert plan(nets(new), live, current, running, TOKEN).writes == []


def test_a_replica_update_does_not_wait_for_the_replica_itself():
    _old, new, current, live = _stateful_update()
    running = dict([report("b", "net", "ledger-r1", 1), report("c", "net", "ledger-r2", 1)])
    assert list(writes_by_id(plan(nets(new), live, current, running, TOKEN))) == ["ledger-r0"]


def test_replicas_are_updated_one_at_a_time():
    _old, new, current, live = _stateful_update()
    current = apply(current, plan(nets(new), live, current, run_all(current), TOKEN))
    running = run_all(current)
    running.update([report("a", "net", "ledger-r0", 1)])  # the new gen is not running yet
    assert plan(nets(new), live, current, running, TOKEN).writes == []
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    got = writes_by_id(made)
    assert list(got) == ["ledger-r1"]
    assert (got["ledger-r1"].host, got["ledger-r1"].gen, got["ledger-r1"].previous) == \
        ("b", 2, None)


# --- label changes ---------------------------------------------------------------------------

def test_a_label_change_moves_a_function_instance_made_before_broken():
    old = network(function(instances=1, extra='labels = { zone = "x" }'))
    new = network(function(instances=1, extra='labels = { zone = "y" }'))
    assert old.instances[0].digest == new.instances[0].digest
    current = place_all(old, {"producer-0": "a"})
    live = agents(agent("a", zone="x"), agent("b", zone="y"))
    [(_net, ident, p, rev)] = plan(nets(new), live, current, run_all(current), TOKEN).writes
    assert (ident, rev) == ("producer-0", 10)
    assert p is not None
    assert (p.host, p.gen, p.previous["host"], p.previous["gen"]) == ("b", 2, "a", 1)


def test_an_agent_label_change_moves_a_function_instance():
    net = network(function(instances=1, extra='labels = { zone = "x" }'))
    current = place_all(net, {"producer-0": "a"})
    live = agents(agent("a", zone="y"), agent("b", zone="x"))
    [(_net, _ident, p, _rev)] = plan(nets(net), live, current, run_all(current), TOKEN).writes
    assert p is not None and (p.host, p.gen, p.previous["host"]) == ("b", 2, "a")


def test_a_label_change_moves_a_stateful_replica_broken_before_made():
    old = network(stateful(replicas=2, extra='labels = { zone = "x" }'))
    new = network(stateful(replicas=2, extra='labels = { zone = "y" }'))
    current = place_all(old, {"ledger-r0": "a", "ledger-r1": "b"})
    live = agents(agent("a", zone="x"), agent("b", zone="x"), agent("c", zone="y"),
                  agent("d", zone="y"))
    made = plan(nets(new), live, current, run_all(current), TOKEN)
    got = writes_by_id(made)
    assert list(got) == ["ledger-r0"]  # one at a time
    # First held where it is (its agent stops it) ...
    held = got["ledger-r0"]
    assert (held.host, held.gen, held.hold, held.previous) == ("a", 1, True, None)
    current = apply(current, made)
    still = run_all(current)
    again = plan(nets(new), live, current, still, TOKEN)
    assert again.writes == [], "nothing more while the held replica still runs on a"
    # ... then, once a reports nothing of it, placed on a host of the new zone.
    del still[("a", "net", "ledger-r0")]
    moved = writes_by_id(plan(nets(new), live, current, still, TOKEN))
    assert list(moved) == ["ledger-r0"]
    assert (moved["ledger-r0"].host, moved["ledger-r0"].gen, moved["ledger-r0"].hold) == \
        ("c", 2, False)


def test_a_label_change_with_nowhere_to_go_leaves_the_instance_where_it_is():
    old = network(function(instances=1, extra='labels = { zone = "x" }'))
    new = network(function(instances=1, extra='labels = { zone = "y" }'))
    current = place_all(old, {"producer-0": "a"})
    made = plan(nets(new), agents(agent("a", zone="x")), current, run_all(current), TOKEN)
    assert made.writes == []
    assert made.unplaced == {("net", "producer-0"): "no live agent has the labels zone=y"}


# --- deletes ---------------------------------------------------------------------------------

def test_placements_of_a_removed_network_are_deleted_with_their_revisions():
    gone = network(function(instances=2), name="gone")
    kept = network(function(instances=1), name="kept")
    current = place_all(gone, {"producer-0": "a", "producer-1": "b"})
    current.update([placed(kept, "producer-0", "a", rev=30)])
    made = plan(nets(kept), agents(agent("a"), agent("b")), current, run_all(current), TOKEN)
    assert made.writes == [("gone", "producer-0", None, 10), ("gone", "producer-1", None, 11)]


def test_placements_of_a_removed_network_are_deleted_even_without_agents():
    gone = network(function(instances=1), name="gone")
    current = place_all(gone, {"producer-0": "a"})
    assert plan({}, {}, current, {}, TOKEN).writes == [("gone", "producer-0", None, 10)]


def test_scaled_down_instances_are_deleted_and_the_rest_untouched():
    before = network(function(instances=3) + stateful(replicas=1))
    after = network(function(instances=1) + stateful(replicas=1))
    current = place_all(before, {"producer-0": "a", "producer-1": "b", "producer-2": "c",
                                 "ledger-r0": "a"})
    made = plan(nets(after), agents(agent("a"), agent("b"), agent("c")), current,
                run_all(current), TOKEN)
    assert made.writes == [("net", "producer-1", None, 11), ("net", "producer-2", None, 12)]


# --- tokens, revisions, determinism ----------------------------------------------------------

def _busy_inputs():
    """A plan with every kind of write: new keys, a lost host, an update, a delete."""
    old = network(function(extra=V1) + stateful(replicas=2) + "[channels.c]\n")
    new = network(function(instances=2, extra=V2) + stateful(replicas=2) +
                  "[channels.c]\nintermediaries = 3\n")
    current = place_all(old, {"producer-0": "a", "producer-1": "b", "producer-2": "c",
                              "ledger-r0": "a", "ledger-r1": "x", "c-i0": "a", "c-i1": "b"})
    live = agents(agent("a"), agent("b"), agent("c"), agent("d"))
    return nets(new), live, current, run_all(current)


def test_every_write_carries_the_token_and_the_revision_it_was_planned_against():
    networks, live, current, running = _busy_inputs()
    made = plan(networks, live, current, running, TOKEN)
    kinds = set()
    for net, ident, p, rev in made.writes:
        existing = current.get((net, ident))
        assert rev == (existing[1] if existing else 0)
        if p is None:
            kinds.add("delete")
            assert existing is not None
        else:
            kinds.add("new" if existing is None else "rewrite")
            assert p.token == TOKEN and (p.network, p.id) == (net, ident)
    assert kinds == {"new", "rewrite", "delete"}


def test_the_same_inputs_give_the_same_plan():
    networks, live, current, running = _busy_inputs()
    first = plan(networks, live, current, running, TOKEN)
    assert first.writes
    assert plan(networks, live, current, running, TOKEN) == first
    shuffled = dict(reversed(list(live.items())))
    assert plan(networks, shuffled, current, running, TOKEN) == first


def test_plan_does_not_change_its_inputs():
    networks, live, current, running = _busy_inputs()
    copies = (dict(networks), dict(live), dict(current), dict(running))
    plan(networks, live, current, running, TOKEN)
    assert (networks, live, current, running) == copies


# --- several rounds --------------------------------------------------------------------------

def _converge(networks: dict[str, Network], live: dict[str, AgentInfo],
              current: Placements, rounds: int = 30) -> tuple[Placements, int]:
    """Plan and apply until a plan writes nothing, every placement reported running at its gen
    between rounds; at most one instance of a group changes per round, and a spread group
    never has two instances on one host."""
    for done in range(rounds):
        made = plan(networks, live, current, run_all(current), TOKEN)
        if not made.writes:
            return current, done
        changed_groups = [p.spec["group"] for n, i, p, _r in made.writes
                          if p is not None and (n, i) in current
                          and current[(n, i)][0].host in live
                          and p.gen != current[(n, i)][0].gen]
        assert len(changed_groups) == len(set(changed_groups)), changed_groups
        current = apply(current, made)
        for name, net in networks.items():
            for group, ids in net.groups().items():
                if not net.by_id()[ids[0]].spread:
                    continue
                hosts = [current[(name, i)][0].host for i in ids if (name, i) in current]
                assert len(hosts) == len(set(hosts)), (group, hosts)
    pytest.fail(f"no fixed point after {rounds} rounds")


def test_repeated_plans_converge_to_no_writes():
    old = network(function(extra=V1) + stateful(extra='version = "1"') +
                  "[channels.c]\nintermediaries = 2\n")
    live = agents(agent("a"), agent("b"), agent("c"), agent("d"))
    current, _ = _converge(nets(old), live, {})
    assert len(current) == 8
    assert all(p.gen == 1 for p, _ in current.values())
    new = network(function(extra=V2) + stateful(extra='version = "2"') +
                  "[channels.c]\nintermediaries = 2\nversion = \"2\"\n")
    current, rounds = _converge(nets(new), live, current)
    assert rounds >= 6  # three function instances, two rounds each
    for (_net, ident), (p, _rev) in current.items():
        assert p.digest == new.by_id()[ident].digest and p.previous is None
        assert p.gen == 2
    # a host is lost: its instances come back elsewhere, and it all settles again
    lost = "a"
    del live[lost]
    current, _ = _converge(nets(new), live, current)
    assert lost not in hosts_of(current).values()
    assert len(current) == 8


def test_an_agent_that_registered_again_runs_nothing_until_restamped():
    """A placement carries its host's registration; an agent back from a lost lease (a new
    registration) has its placements written again with the new one — unless the manager
    moved them while the agent was gone, in which case its CAS on the old record wins."""
    net = network(function(instances=1))
    current = place_all(net, {"producer-0": "a"})
    back = AgentInfo("a", "tcp://a:5000", 4, {"host": "a"}, registration=77)
    made = plan(nets(net), agents(back), current, {}, TOKEN)
    [(_net, ident, p, rev)] = made.writes
    assert (ident, rev) == ("producer-0", 10)
    assert p is not None and (p.host, p.gen, p.registration) == ("a", 1, 77)


def test_a_replica_update_waits_while_a_sibling_was_never_placed():
    net = network(stateful(replicas=3))
    current = place_all(net, {"ledger-r0": "a", "ledger-r1": "b"})  # r2: nowhere to go
    newer = network(stateful(replicas=3, extra='version = "2"'))
    made = plan(nets(newer), agents(agent("a"), agent("b")), current, run_all(current), TOKEN)
    assert [w for w in made.writes if w[2] is not None and w[2].gen > 1] == []
