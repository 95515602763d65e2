"""The node's watch hub over a real state machine, with an in-memory transport."""
from __future__ import annotations

import time

import pytest

from nameservice import wire
from nameservice.kv import Batch, Delete, KvConfig, KvStateMachine, Put
from nameservice.server import watches as watches_module
from nameservice.server.watches import ADVANCE_S, PROGRESS_S, WatchHub
from tests.waiting import wait_for

A, B = b"client-a", b"client-b"


class MemoryTransport:
    """Records the pushes the hub queues; ``fail_next`` makes the next sends fail."""

    def __init__(self) -> None:
        self.pushes: list[tuple[bytes, list]] = []
        self.on_push_failed = None

    def queue_push(self, identity: bytes, item: list) -> None:
        self.pushes.append((identity, item))

    def take(self) -> list[tuple[bytes, list]]:
        out, self.pushes = self.pushes, []
        return out


def make_hub(history_events: int = 10_000) -> tuple[WatchHub, KvStateMachine, MemoryTransport]:
    machine = KvStateMachine(KvConfig(history_events=history_events))
    hub = WatchHub(machine)
    transport = MemoryTransport()
    hub.attach(transport)
    return hub, machine, transport


def apply(hub: WatchHub, machine: KvStateMachine, *commands) -> None:
    applied = machine.apply(machine.applied_index + 1, Batch(tuple(commands)))
    hub.on_events(applied.events)


def watch(hub: WatchHub, identity: bytes, wid: int, key: bytes, prefix: bool = True,
          from_rev: int = 0):
    return hub.handle(identity, [1, wire.OP_WATCH, wid, key, prefix, from_rev])


def keys_of(item: list) -> list[bytes]:
    return [event[1][0] for event in item[4]]


def test_pushes_cover_consecutive_revision_ranges_with_only_matching_events():
    hub, machine, transport = make_hub()
    apply(hub, machine, Put(b"svc/old", b"0"))
    assert watch(hub, A, 1, b"svc/") == (wire.ST_OK, [1, 0])  # from now: revision 1
    apply(hub, machine, Put(b"svc/a", b"1"), Put(b"x", b"-"), Put(b"svc/b", b"2"))
    hub.flush()
    [(identity, item)] = transport.take()
    assert identity == A
    assert item[:4] == [[1], wire.PUSH_EVENTS, 2, 4] and keys_of(item) == [b"svc/a", b"svc/b"]
    apply(hub, machine, Put(b"x", b"-"))  # revision 5: nothing for the watch
    apply(hub, machine, Delete(b"svc/a"))  # revision 6
    hub.flush()
    [(_, item)] = transport.take()
    assert item[:4] == [[1], wire.PUSH_EVENTS, 5, 6] and item[4][0][0] == 1  # a DELETE


def test_a_key_watch_ignores_other_keys_under_it():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"k", prefix=False)
    apply(hub, machine, Put(b"k2", b"-"), Put(b"k", b"v"))
    hub.flush()
    [(_, item)] = transport.take()
    assert keys_of(item) == [b"k"] and item[2:4] == [1, 2]


def test_a_watch_from_a_revision_replays_the_history_then_continues():
    hub, machine, transport = make_hub()
    for i in range(5):
        apply(hub, machine, Put(b"a/%d" % i, b"v"))
    assert watch(hub, A, 7, b"a/", from_rev=3) == (wire.ST_OK, [5, 0])
    hub.flush()
    [(_, item)] = transport.take()
    assert item[:4] == [[7], wire.PUSH_EVENTS, 3, 5] and keys_of(item) == [b"a/2", b"a/3", b"a/4"]
    apply(hub, machine, Put(b"a/9", b"v"))
    hub.flush()
    assert transport.take()[0][1][2:4] == [6, 6]


def test_a_long_replay_is_cut_into_consecutive_pushes(monkeypatch):
    monkeypatch.setattr(watches_module, "MAX_EVENTS_PER_PUSH", 4)
    hub, machine, transport = make_hub()
    for i in range(10):
        apply(hub, machine, Put(b"a/%d" % i, b"v"))
    watch(hub, A, 1, b"a/", from_rev=1)
    hub.flush()
    ranges = [item[2:4] for _, item in transport.take()]
    assert ranges == [[1, 4], [5, 8], [9, 10]]


def test_a_watch_older_than_the_history_is_refused_with_the_oldest_revision():
    hub, machine, transport = make_hub(history_events=3)
    for i in range(6):
        apply(hub, machine, Put(b"a", b"%d" % i))
    assert watch(hub, A, 1, b"a", from_rev=2) == (wire.ST_OK, [6, 4])
    assert len(hub) == 0
    assert watch(hub, A, 1, b"a", from_rev=4) == (wire.ST_OK, [6, 0])


def test_a_lagging_node_starts_the_watch_where_the_client_is_and_catches_up():
    hub, machine, transport = make_hub()
    apply(hub, machine, Put(b"a", b"1"))
    watch(hub, A, 1, b"a", from_rev=4)  # the client has seen up to 3; this node is at 1
    apply(hub, machine, Put(b"a", b"2"), Put(b"a", b"3"))  # revisions 2, 3: already seen
    hub.flush()
    assert transport.take() == []
    apply(hub, machine, Put(b"a", b"4"))
    hub.flush()
    [(_, item)] = transport.take()
    assert item[2:4] == [4, 4] and len(item[4]) == 1


def test_quiet_connections_get_heartbeats_and_idle_watches_progress_up_to_the_revision():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"a/")
    watch(hub, A, 2, b"a/")
    apply(hub, machine, Put(b"b", b"-"), Put(b"b", b"-"))
    hub.flush()
    assert transport.take() == []
    now = time.monotonic()
    hub.tick(now)  # the first tick advances idle watches (a push: no heartbeat needed)
    assert transport.take() == [(A, [[1, 2], wire.PUSH_EVENTS, 1, 2, []])]
    apply(hub, machine, Put(b"b", b"-"))
    hub.tick(now + PROGRESS_S)  # a heartbeat only: the next advance is due after ADVANCE_S
    assert transport.take() == [(A, [[], wire.PUSH_EVENTS, 0, 0, []])]
    hub.tick(now + ADVANCE_S)
    assert [item for _, item in transport.take() if item[0]] == [
        [[1, 2], wire.PUSH_EVENTS, 3, 3, []]]
    apply(hub, machine, Put(b"a/x", b"v"))
    hub.flush()
    assert transport.take()[0][1][2:4] == [4, 4]


def test_a_connection_that_just_got_a_push_gets_no_heartbeat():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"a/")
    watch(hub, B, 1, b"a/")
    hub.tick(time.monotonic())
    transport.take()
    apply(hub, machine, Put(b"a/x", b"v"))
    hub.flush()
    transport.take()
    hub.tick(time.monotonic() + PROGRESS_S / 2)
    assert transport.take() == []


def test_a_client_whose_queue_is_full_gets_its_watches_cancelled_until_the_cancel_gets_through():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"a/")
    watch(hub, A, 2, b"b/")
    watch(hub, B, 1, b"a/")
    apply(hub, machine, Put(b"a/1", b"v"))
    hub.flush()
    pushes = transport.take()
    failed = [item for identity, item in pushes if identity == A]
    transport.on_push_failed(A, failed, False)  # A's queue is full
    assert len(hub) == 2  # A's watch 1 is gone, its watch 2 and B's remain
    transport.on_push_failed(A, [[[1], wire.PUSH_CANCEL, wire.CANCEL_OVERFLOW, "", 0]], False)
    hub.tick(time.monotonic() + PROGRESS_S)
    cancels = [item for identity, item in transport.take() if item[1] == wire.PUSH_CANCEL]
    assert cancels == [[[1], wire.PUSH_CANCEL, wire.CANCEL_OVERFLOW,
                        "the client did not read its events in time; resume", 0]]
    hub.tick(time.monotonic() + 2 * PROGRESS_S)
    assert all(item[1] == wire.PUSH_EVENTS for _, item in transport.take())  # sent: not again


def test_a_client_that_is_gone_loses_every_watch():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"a/")
    watch(hub, A, 2, b"b/")
    watch(hub, B, 1, b"a/")
    transport.on_push_failed(A, [], True)
    assert len(hub) == 1 and hub.counters["watch_clients_gone"] == 1


def test_installing_a_snapshot_cancels_every_watch():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"a/")
    watch(hub, B, 5, b"")
    hub.on_restore()
    cancels = sorted((identity, item[0][0], item[2]) for identity, item in transport.take())
    assert cancels == [(A, 1, wire.CANCEL_RESTORED), (B, 5, wire.CANCEL_RESTORED)]
    assert len(hub) == 0


def test_cancel_and_bad_requests():
    hub, machine, transport = make_hub()
    watch(hub, A, 1, b"a/")
    assert watch(hub, A, 1, b"b/")[0] == wire.ST_BAD_REQUEST  # the id is in use
    assert hub.handle(A, [1, wire.OP_WATCH, 2, "text", True, 0])[0] == wire.ST_BAD_REQUEST
    assert hub.handle(A, [1, wire.OP_WATCH, 2, b"k", True])[0] == wire.ST_BAD_REQUEST
    assert hub.handle(A, [1, wire.OP_WATCH, -1, b"k", True, 0])[0] == wire.ST_BAD_REQUEST
    assert hub.handle(A, [1, wire.OP_WATCH_CANCEL, 1]) == (wire.ST_OK, True)
    assert hub.handle(A, [1, wire.OP_WATCH_CANCEL, 1]) == (wire.ST_OK, False)
    assert len(hub) == 0
    apply(hub, machine, Put(b"a/1", b"v"))
    hub.flush()
    assert transport.take() == []


def test_watches_per_client_are_bounded(monkeypatch):
    monkeypatch.setattr(watches_module, "MAX_WATCHES_PER_CLIENT", 2)
    hub, machine, transport = make_hub()
    assert watch(hub, A, 1, b"a")[0] == wire.ST_OK
    assert watch(hub, A, 2, b"a")[0] == wire.ST_OK
    status, message = watch(hub, A, 3, b"a")
    assert status == wire.ST_BAD_REQUEST and "too many watches for this client" in message
    assert watch(hub, B, 3, b"a")[0] == wire.ST_OK
    assert hub.counters["watch_quota_refused"] == 1


def test_a_node_full_of_one_clients_watches_still_serves_a_small_client(monkeypatch):
    monkeypatch.setattr(watches_module, "MAX_WATCHES", 3)
    monkeypatch.setattr(watches_module, "RESERVED_WATCHES", 2)
    monkeypatch.setattr(watches_module, "WATCHES_RESERVED_FLOOR", 1)
    hub, machine, transport = make_hub()
    for wid in (1, 2, 3):
        assert watch(hub, A, wid, b"a")[0] == wire.ST_OK
    status, message = watch(hub, A, 4, b"a")  # the node's share is taken, A is no small client
    assert status == wire.ST_BAD_REQUEST and message == "too many watches on this node"
    assert watch(hub, B, 1, b"a")[0] == wire.ST_OK  # B holds none: the reserve serves it
    assert watch(hub, B, 2, b"a")[0] == wire.ST_BAD_REQUEST  # ... below the floor only
    assert watch(hub, b"C", 1, b"a")[0] == wire.ST_OK
    assert watch(hub, b"D", 1, b"a")[0] == wire.ST_BAD_REQUEST  # the reserve is used up
    assert hub.counters["watch_refused"] == 3


def test_watches_of_one_client_owed_the_same_events_share_one_push():
    hub, machine, transport = make_hub()
    for wid in (1, 2, 3):
        watch(hub, A, wid, b"a/")
    watch(hub, A, 4, b"a/", from_rev=1)  # replayed from 1: its own push
    watch(hub, B, 1, b"a/")
    apply(hub, machine, Put(b"a/1", b"v"))
    hub.flush()
    pushes = sorted((identity, item[0], item[2:4]) for identity, item in transport.take())
    assert pushes == [(A, [1, 2, 3, 4], [1, 1]), (B, [1], [1, 1])]  # 4 had caught up
    apply(hub, machine, Put(b"a/2", b"v"))
    hub.flush()
    assert sorted((identity, item[0]) for identity, item in transport.take()) == [
        (A, [1, 2, 3, 4]), (B, [1])]


@pytest.mark.parametrize("prefix", [b"", b"a"])
def test_one_event_matching_a_key_and_a_prefix_watch_of_one_client_goes_to_both(prefix):
    hub, machine, transport = make_hub()
    watch(hub, A, 1, prefix)
    watch(hub, A, 2, b"a", prefix=False)
    apply(hub, machine, Put(b"a", b"v"))
    hub.flush()
    assert sorted(wid for _, item in transport.take() for wid in item[0]) == [1, 2]


def test_a_node_leaderless_for_too_long_cancels_its_watches_and_refuses_new_ones():
    hub, machine, transport = make_hub()
    hub.leaderless_s = 1.0
    watch(hub, A, 1, b"a/")
    now = time.monotonic()
    hub.tick(now, has_leader=False)
    hub.tick(now + 0.5, has_leader=False)  # an election's worth: nothing happens
    assert len(hub) == 1
    hub.tick(now + 1.0, has_leader=False)
    assert len(hub) == 0
    cancels = [item for _, item in transport.take() if item[1] == wire.PUSH_CANCEL]
    assert [c[:3] for c in cancels] == [[[1], wire.PUSH_CANCEL, wire.CANCEL_NO_LEADER]]
    assert watch(hub, A, 2, b"a/")[0] == wire.ST_UNAVAILABLE
    hub.tick(now + 1.1, has_leader=True)
    assert watch(hub, A, 2, b"a/")[0] == wire.ST_OK


def test_a_replay_of_large_values_is_cut_by_bytes(monkeypatch):
    monkeypatch.setattr(watches_module, "MAX_PUSH_BYTES", 10_000)
    hub, machine, transport = make_hub()
    for i in range(6):
        apply(hub, machine, Put(b"a/%d" % i, b"x" * 4000))
    watch(hub, A, 1, b"a/", from_rev=1)
    hub.flush()
    assert [item[2:4] for _, item in transport.take()] == [[1, 2], [3, 4], [5, 6]]


def test_the_transport_splits_large_push_batches_into_frames_under_the_limit():
    import zmq
    import zmq.asyncio

    from nameservice.server.local import free_ports
    from nameservice.server.transport import NodeTransport

    ctx = zmq.asyncio.Context()
    address = f"127.0.0.1:{free_ports(1)[0]}"
    transport = NodeTransport(ctx, 1, {1: address})
    client_ctx = zmq.Context()
    client = client_ctx.socket(zmq.DEALER)
    try:
        client.connect(f"tcp://{address}")
        client.send(b"hello")
        received = wait_for(lambda: transport.drain(1), 5, "the hello", interval=0.01)
        identity = received[0][0]
        big = [[0, [b"a/%d" % i, b"x" * (1 << 20), i, i, 1, 0]] for i in range(1, 4)]
        items = [[[wid], wire.PUSH_EVENTS, 1, 3, big] for wid in range(1, 5)]  # ~12 MiB
        for item in items:
            transport.queue_push(identity, item)
        transport.flush()
        got, sizes = [], []
        while len(got) < len(items):
            assert client.poll(5000), "the pushes did not arrive"
            data = client.recv()
            sizes.append(len(data))
            kind, body = wire.split_frame(data, wire.MAX_PEER_FRAME)
            assert kind == wire.EVENT
            got += body
        assert [item[0] for item in got] == [[1], [2], [3], [4]]
        assert len(sizes) > 1 and max(sizes) <= wire.MAX_CLIENT_FRAME
    finally:
        client.close(0)
        client_ctx.term()
        transport.close()
        ctx.term()
