"""CURVE refusals against a secured deployment of real processes: three name-service nodes,
an intermediary, a producer and a consumer, all with keys, messages flowing (secured.py).

A peer with no key and a peer with a key no server trusts (its own pair, trusting the
servers' keys) each try to read and write a key, to register or redirect a channel, to
consume and to produce through the intermediary, to drain the intermediary and a node, and to
move a node's term with forged Raft messages. Every attempt fails — no answer, or the
client's clear refusal — changes nothing, and is counted by the server it reached; the
stranger's key is logged once per server with its address. A client expecting another key
for a node's address is refused clearly. At the end the right keys still work, and the
consumer got every message, once, and none but the producer's.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import msgpack
import pytest

from fabric import protocol as p
from fabric.butterfly.consumer import RECORD
from nameservice import wire
from nameservice.client import NameServiceClient
from nameservice.control import control_request, encode_request
from nameservice.errors import Unavailable
from nameservice.raft import messages as msg
from nameservice.security import context
from nameservice.security.keys import load_keys
from tests.security.secured import (
    CHANNEL,
    COUNTERS,
    OUTSIDERS,
    PRODUCER_INDEX,
    REFUSAL,
    STRANGER,
    Secured,
    acting_as,
    deployment,
    keys_of,
    log_lines,
    raw_peers,
    received,
    refused,
    stranger_logged,
)
from tests.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.slow

FORGED_ID = 9 << 40  # a message id no real producer sends
FORGED_TERMS = 10_000
SILENCE = 0.3  # s to listen for an answer after a handshake failed (none can come after it)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(context, "_current", None)  # this process's keys: as before, after
        with deployment(tmp_path_factory.mktemp("curve")) as found:
            yield found


async def _attempt(awaitable) -> object:
    """What ``awaitable`` returned, or the exception it raised."""
    try:
        return await awaitable
    except Exception as exc:
        return exc


async def _security(s: Secured, target: int | str) -> dict:
    """The security status of node ``target`` (an id) or of process ``target`` (a name)."""
    if isinstance(target, int):
        return await s.node_security(target)
    return await s.process_security(target)


async def _counters(s: Secured, targets: list) -> dict:
    return {target: await _security(s, target) for target in targets}


def _log(s: Secured, target: int | str) -> Path:
    return s.node_log(target) if isinstance(target, int) else s.fleet.procs[target].log_path


async def _refusals_counted_and_logged(s: Secured, outsider: str, before: dict) -> None:
    """Every server in ``before`` counted more refusals of ``outsider``'s kind than it had
    then; the stranger's key is in each one's log exactly once, with its address."""
    counters = COUNTERS[outsider]

    def refusals(security: dict) -> int:
        return sum(security.get(counter, 0) for counter in counters)

    async def counted() -> bool:
        now = await _counters(s, list(before))
        return all(refusals(now[t]) > refusals(before[t]) for t in before)

    await async_wait_for(counted, 15, f"{' + '.join(counters)} to grow on {list(before)}")
    if outsider == STRANGER:
        assert s.stranger is not None
        pattern = stranger_logged(s.stranger.public)
        await async_wait_for(lambda: all(log_lines(_log(s, t), pattern) for t in before), 10,
                             f"the stranger's key in the logs of {list(before)}")
        assert {t: log_lines(_log(s, t), pattern) for t in before} == dict.fromkeys(before, 1)


def _refusal(outcome: object, outsider: str) -> bool:
    return isinstance(outcome, Unavailable) and str(outcome).startswith(REFUSAL[outsider])


@pytest.mark.parametrize("outsider", OUTSIDERS)
async def test_an_outsider_can_neither_read_nor_write_a_key(secured, outsider):
    s = secured
    async with s.admin() as ns:
        await ns.put("guarded/key", "original")
    before = await _counters(s, list(s.cluster.ids))
    began = time.monotonic()
    with acting_as(s, s.dirs[outsider]):
        async with NameServiceClient(s.ns, timeout=10) as ns:
            outcomes = [await _attempt(ns.get("guarded/key")),
                        await _attempt(ns.put("guarded/key", "forged")),
                        await _attempt(ns.put(f"guarded/{outsider}", "planted"))]
    refused_in = time.monotonic() - began
    async with s.admin() as ns:
        assert (await ns.get("guarded/key")).value == b"original"
        assert await ns.get(f"guarded/{outsider}") is None
    assert all(_refusal(outcome, outsider) for outcome in outcomes), [str(o) for o in outcomes]
    assert refused_in < 5, "the refusal waited for the client's timeout (10 s)"
    await _refusals_counted_and_logged(s, outsider, before)


@pytest.mark.parametrize("outsider", OUTSIDERS)
async def test_an_outsider_can_neither_register_nor_redirect_a_channel(secured, outsider):
    s = secured
    async with s.admin() as ns:
        entries = await s.channel_entries()
        assert [e.endpoint for e in entries] == [s.data_endpoint]
        real = await ns.get(entries[0].key)
    planted = entries[0].key.rsplit(b"/", 1)[0] + b"/" + outsider.encode()
    forged = msgpack.packb({"endpoint": "tcp://127.0.0.1:9", "meta": {"name": outsider}})
    before = await _counters(s, list(s.cluster.ids))
    with acting_as(s, s.dirs[outsider]):
        async with NameServiceClient(s.ns, timeout=10) as ns:
            outcomes = [await _attempt(ns.put(entries[0].key, forged)),
                        await _attempt(ns.put(planted, forged))]
    async with s.admin() as ns:
        now = await ns.get(entries[0].key)
        assert (now.value, now.version, now.lease) == (real.value, real.version, real.lease)
        assert await ns.get(planted) is None
    assert [e.endpoint for e in await s.channel_entries()] == [s.data_endpoint]
    assert all(_refusal(outcome, outsider) for outcome in outcomes), [str(o) for o in outcomes]
    await _refusals_counted_and_logged(s, outsider, before)


@pytest.mark.parametrize("outsider", OUTSIDERS)
async def test_an_outsider_can_neither_consume_nor_produce_through_the_intermediary(
        secured, outsider):
    s = secured
    pair = keys_of(s.dirs[outsider])
    before = await _counters(s, ["int"])
    consumer_id, producer_id = os.urandom(16), os.urandom(16)
    async with raw_peers() as peer:
        # Admitted, a raw peer is answered: an unknown producer's heartbeat gets WHO.
        admin = peer(s.data_endpoint, keys_of(s.cluster.keys["admin"]),
                     routing_id=b"P" + os.urandom(16))
        await admin.sock.send(p.heartbeat_frame())
        assert p.T_WHO in [p.frame_type(f[-1]) for f in await admin.answers(10)]

        consumer = peer(s.data_endpoint, pair, routing_id=b"C" + consumer_id)
        await consumer.sock.send(p.encode(p.Hello(p.ROLE_CONSUMER, consumer_id, 1000, CHANNEL)))
        producer = peer(s.data_endpoint, pair, routing_id=b"P" + producer_id)
        await producer.sock.send(p.encode(p.Hello(p.ROLE_PRODUCER, producer_id, 0, CHANNEL)))
        await producer.sock.send(p.batch_frame(producer_id, 0, 1, 0,
                                               p.encode_payloads([FORGED_ID])))
        outcomes = [await consumer.handshake(), await producer.handshake()]
        heard = [await consumer.answers(SILENCE), await producer.answers(SILENCE)]
    assert heard == [[], []]  # no batch, not even a heartbeat
    assert all(refused(outsider, outcome) for outcome in outcomes), outcomes
    await _refusals_counted_and_logged(s, outsider, before)


@pytest.mark.parametrize("outsider", OUTSIDERS)
async def test_an_outsider_cannot_drain_the_intermediary_or_a_node(secured, outsider):
    s = secured
    pair = keys_of(s.dirs[outsider])
    before = await _counters(s, ["int", 1])
    async with raw_peers() as peer:
        # Admitted, a raw request is answered.
        admin = peer(s.controls["int"], keys_of(s.cluster.keys["admin"]))
        await admin.sock.send(encode_request("status"))
        assert json.loads((await admin.answers(10))[0][0])["ok"]

        tries = [peer(s.controls[name], pair) for name in ("int", "ns-1")]
        for attempt in tries:
            await attempt.sock.send(encode_request("drain", timeout=1))
        outcomes = [await attempt.handshake() for attempt in tries]
        heard = [await attempt.answers(SILENCE) for attempt in tries]
    assert s.intermediary.alive() and s.cluster.running(1)
    assert (await control_request(s.controls["int"], "status", 10))["draining"] is False
    assert (await control_request(s.controls["ns-1"], "status", 10))["role"] in (
        "leader", "follower")
    assert [e.endpoint for e in await s.channel_entries()] == [s.data_endpoint]
    assert heard == [[], []]
    assert all(refused(outsider, outcome) for outcome in outcomes), outcomes
    await _refusals_counted_and_logged(s, outsider, before)


@pytest.mark.parametrize("outsider", OUTSIDERS)
async def test_an_outsider_cannot_move_a_nodes_term_with_forged_raft_messages(
        secured, outsider):
    s = secured
    pair = keys_of(s.dirs[outsider])
    node_keys = load_keys(s.dirs[STRANGER]).nodes  # the stranger trusts the nodes' keys
    async with s.admin() as ns:
        term = max([(await ns.status(a, timeout=5))["term"] for a in s.cluster.addresses.values()])
    forged = term + FORGED_TERMS  # far past any election a busy machine may see meanwhile
    before = await _counters(s, list(s.cluster.ids))
    async with raw_peers() as peer:
        tries = []
        for node_id, address in s.cluster.addresses.items():
            attempt = peer(f"tcp://{address}", pair, server_key=node_keys[address])
            other = node_id % len(s.cluster.ids) + 1
            # Admitted, they would move the node's term: an append from a "leader" of a later
            # term, then a vote request for a log far ahead flagged as a leadership transfer
            # (so the lease of that "leader" does not hold it off).
            await attempt.sock.send(wire.encode_peer_frame([
                msg.AppendRequest(other, node_id, forged, 0, 0, (), 0),
                msg.VoteRequest(other, node_id, forged + 1, 1 << 40, forged, False, True)]))
            tries.append(attempt)
        outcomes = [await attempt.handshake() for attempt in tries]
        heard = [await attempt.answers(SILENCE) for attempt in tries]
    async with s.admin() as ns:
        after = {i: (await ns.status(a, timeout=5))["term"]
                 for i, a in s.cluster.addresses.items()}
    assert all(now < forged for now in after.values()), (term, after)
    assert heard == [[]] * len(tries)
    assert all(refused(outsider, outcome) for outcome in outcomes), outcomes
    await _refusals_counted_and_logged(s, outsider, before)


async def test_a_client_expecting_another_key_for_the_nodes_is_refused_clearly(secured):
    s = secured
    before = await _counters(s, list(s.cluster.ids))
    began = time.monotonic()
    with acting_as(s, s.dirs["misled"]):
        async with NameServiceClient(s.ns, timeout=10) as ns:
            outcome = await _attempt(ns.get("guarded/key"))
    assert time.monotonic() - began < 5, "the refusal waited for the client's timeout (10 s)"
    assert isinstance(outcome, Unavailable), outcome
    assert str(outcome).startswith("refused: the handshake failed (is the node's key the one "
                                   "trusted for its address?)"), outcome

    async def counted() -> bool:
        now = await _counters(s, list(before))
        return all(now[t]["handshake_refused_crypto"] > before[t]["handshake_refused_crypto"]
                   for t in before)

    await async_wait_for(counted, 15, "handshake_refused_crypto to grow on every node")


def _delivered(path: Path) -> list[int]:
    return [ident for ident, *_ in RECORD.iter_unpack(path.read_bytes())]


async def test_the_right_keys_still_work_and_the_consumer_got_every_message_once(secured):
    s = secured
    async with s.admin() as ns:
        await ns.put("guarded/after", "still")
        assert (await ns.get("guarded/after")).value == b"still"
    assert (await control_request(s.controls["int"], "status", 10))["security"]["mode"] == \
        "curve"
    assert [e.endpoint for e in await s.channel_entries()] == [s.data_endpoint]
    s.producer.signal(signal.SIGTERM)
    sent = s.producer.wait_event("sent", 30)[1]["count"]
    assert s.producer.wait(30) == 0
    wait_for(lambda: received(s.consumer) >= sent, 30, "the consumer to receive every message")
    s.consumer.signal(signal.SIGTERM)
    counts = s.consumer.wait_event("received", 30)[1]
    assert s.consumer.wait(30) == 0
    assert counts["duplicates"] == 0 and counts["unique"] == sent, counts
    base = PRODUCER_INDEX << 40
    assert sorted(_delivered(s.tmp / "cons.bin")) == [base | i for i in range(sent)]
