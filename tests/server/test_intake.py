"""Request intake alone, over a stand-in core: routing, parking while no leader is known,
busy limits, bad requests."""
from __future__ import annotations

import time

from nameservice import wire
from nameservice.kv import Batch, KvStateMachine, Put
from nameservice.raft.types import NONE, Role
from nameservice.server.intake import RequestIntake
from nameservice.server.leases import LeaseClock
from nameservice.server.members import MemberBook, MembershipService
from nameservice.server.reads import ReadService
from nameservice.server.stale import StaleWrites
from nameservice.server.watches import WatchHub
from nameservice.server.writes import WriteBatcher

ADDRESSES = {1: "n1:1", 2: "n2:2"}
CLIENT = b"client"


class Core:
    """The part of ``RaftCore`` the intake, batcher and read service use."""

    def __init__(self) -> None:
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.stepped: list = []
        self.proposed: list[bytes] = []
        self.read_indexes: list[bytes] = []

    def step(self, msg) -> None:
        self.stepped.append(msg)

    def propose(self, data: bytes) -> int:
        self.proposed.append(data)
        return len(self.proposed)

    def read_index(self, ctx: bytes) -> bool:
        self.read_indexes.append(ctx)
        return True

    def lead(self) -> None:
        self.role, self.leader = Role.LEADER, 1

    def follow(self, leader: int) -> None:
        self.role, self.leader = Role.FOLLOWER, leader


class Setup:
    def __init__(self, max_parked: int = 100, max_pending: int = 1000) -> None:
        self.core = core = Core()
        self.machine = machine = KvStateMachine()
        self.replies: list[tuple] = []
        reply = lambda *r: self.replies.append(r)  # noqa: E731
        leader_address = lambda: ADDRESSES.get(core.leader)  # noqa: E731
        stale = StaleWrites(None)
        self.writes = WriteBatcher(core.propose, reply, leader_address, max_pending=max_pending)
        self.reads = ReadService(machine, stale, core.read_index, reply, timeout_s=1.0)
        self.intake = RequestIntake(
            core, machine, writes=self.writes, reads=self.reads, leases=LeaseClock(),
            watches=WatchHub(machine), stale=stale, reply=reply, leader_address=leader_address,
            members=MembershipService(core, MemberBook(machine, {}), reply,  # type: ignore[arg-type]
                                      applied_index=lambda: machine.applied_index),
            status=lambda: {"role": core.role.value}, term_start=lambda: 0, timeout_s=1.0,
            max_parked=max_parked)

    def send(self, *requests: list) -> None:
        self.intake.handle_frames([[CLIENT, wire.frame(wire.REQUEST, list(requests))]])

    def statuses(self) -> list[tuple[int, int]]:
        return [(rid, status) for _, rid, status, _ in self.replies]


def write(rid: int) -> list:
    return [rid, wire.OP_WRITE, [16, 5, rid, 0, [1, b"k%d" % rid, b"v", 0, False]]]


def get(rid: int, key: bytes = b"k", consistent: bool = True) -> list:
    return [rid, wire.OP_GET, key, consistent]


def test_requests_that_need_a_leader_are_parked_while_none_is_known():
    s = Setup()
    s.send(write(1), get(2))
    assert s.intake.parked == 2 and s.replies == []


def test_beyond_max_parked_requests_are_answered_unavailable():
    s = Setup(max_parked=1)
    s.send(write(1), write(2))
    assert s.intake.parked == 1 and s.statuses() == [(2, wire.ST_UNAVAILABLE)]


def test_parked_requests_time_out_unavailable():
    s = Setup()
    s.send(write(1))
    s.intake.expire(time.monotonic())
    assert s.replies == []
    s.intake.expire(time.monotonic() + 1.5)
    assert s.replies == [(CLIENT, 1, wire.ST_UNAVAILABLE, "no leader elected in time")]
    assert s.intake.parked == 0


def test_parked_requests_go_to_a_new_leader_at_once_writes_as_one_entry():
    s = Setup()
    s.send(write(1), write(2), get(3))
    s.core.lead()
    s.intake.release_parked()
    assert s.intake.parked == 0 and len(s.core.proposed) == 1 and len(s.core.read_indexes) == 1
    assert s.writes.pending == 2 and s.reads.pending == 1 and s.replies == []


def test_parked_requests_are_redirected_when_another_node_leads():
    s = Setup()
    s.send(write(1))
    s.core.follow(2)
    s.intake.release_parked()
    assert s.replies == [(CLIENT, 1, wire.ST_NOT_LEADER, "n2:2")]


def test_a_follower_redirects_writes_and_keepalives_to_the_leader():
    s = Setup()
    s.core.follow(2)
    s.send(write(1), [2, wire.OP_KEEPALIVE, 9])
    assert s.replies == [(CLIENT, 1, wire.ST_NOT_LEADER, "n2:2"),
                         (CLIENT, 2, wire.ST_NOT_LEADER, "n2:2")]


def test_a_leader_answers_busy_beyond_its_pending_writes():
    s = Setup(max_pending=1)
    s.core.lead()
    s.send(write(1), write(2))
    assert s.statuses() == [(2, wire.ST_BUSY)]
    assert s.intake.counters["busy"] == 1 and s.intake.counters["writes"] == 1


def test_stale_reads_and_status_are_answered_at_once_from_the_applied_state():
    s = Setup()
    s.machine.apply(1, Batch((Put(b"k", b"v"),)))
    s.send(get(1, consistent=False), [2, wire.OP_STATUS])
    (_, _, status, payload), status_reply = s.replies
    assert status == wire.ST_OK and payload[0][:2] == [b"k", b"v"]
    assert status_reply == (CLIENT, 2, wire.ST_OK, {"role": "follower"})


def test_bad_frames_and_requests_are_counted_and_bad_requests_answered():
    s = Setup()
    s.core.lead()
    s.intake.handle_frames([[CLIENT, b"\x01\x02\xc1"], [CLIENT, b"x", b"y"]])
    s.send([1, wire.OP_WRITE, [99]], ["no rid"])
    counters = s.intake.counters
    assert (counters["bad_client_frames"], counters["bad_requests"]) == (2, 2)
    assert s.statuses() == [(1, wire.ST_BAD_REQUEST)]


def test_a_client_may_not_expire_leases_itself():
    s = Setup()
    s.core.lead()
    s.send([1, wire.OP_WRITE, [16, 5, 1, 0, [8, 3]]])  # Request(LeaseExpire(3))
    (_, rid, status, message), = s.replies
    assert (rid, status) == (1, wire.ST_BAD_REQUEST) and "may not send" in message
    assert s.writes.pending == 0


def test_snap_frames_go_to_the_stream_part_and_bad_ones_are_counted():
    s = Setup()
    streamed: list = []
    s.intake._on_stream = streamed.extend  # what the node passes as on_stream
    ack = wire.SnapAck(2, 1, 3, 50, wire.ACK_PROGRESS, 16)
    s.intake.handle_frames([[b"peer", wire.encode_snap_frame([ack])],
                            [b"peer", b"\x01\x05" + b"\xc1"],  # not msgpack
                            [b"peer", wire.frame(wire.SNAP, [[7, 1, 2, 3]])]])  # unknown tag
    assert streamed == [ack] and s.core.stepped == []
    assert s.intake.counters["bad_peer_frames"] == 2


def test_without_a_stream_part_snap_frames_are_bad_peer_frames():
    s = Setup()
    s.intake.handle_frames([[b"peer", wire.encode_snap_frame([
        wire.SnapAck(2, 1, 3, 50, wire.ACK_PROGRESS, 16)])]])
    assert s.intake.counters["bad_peer_frames"] == 1
