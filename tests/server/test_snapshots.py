"""Snapshot streaming, sender and receiver wired back to back through real SNAP frames (no
loop, no sockets, a fake clock): chunking, the window, CRC refusals, gaps, resume from a
partial file, garbage."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nameservice import wire
from nameservice.raft.messages import SnapshotRequest
from nameservice.raft.types import Snapshot, SnapshotMeta
from nameservice.server import snapshots
from nameservice.server.snapreceive import partial_name
from nameservice.server.snapshots import SnapshotStreams

CHUNK = 16
WINDOW = 4
LEADER, FOLLOWER, TERM = 1, 2, 3


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def image(size: int = 100) -> Snapshot:
    return Snapshot(SnapshotMeta(50, 2, (1, 2, 3), (4,)), bytes(i % 251 for i in range(size)))


class Pair:
    """A leader's and a follower's ``SnapshotStreams`` and the frames in flight between them.
    ``drop(msg)`` / ``corrupt(msg)`` decide, per chunk, to lose it or to flip a byte."""

    def __init__(self, spool_dir: str | None, *, chunk: int = CHUNK, window: int = WINDOW,
                 clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.to_follower: list[bytes] = []
        self.to_leader: list[bytes] = []
        self.delivered: list[SnapshotRequest] = []
        self.committed = 0
        self.follower_term = TERM
        self.chunks_seen: list[int] = []  # offsets of the chunks that reached the follower
        self.leader = SnapshotStreams(
            LEADER, self._leader_sends, lambda r: None, committed_index=lambda: 0,
            current_term=lambda: TERM, spool_dir=None, clock=self.clock, chunk_size=chunk,
            window=window)
        self.spool_dir = spool_dir
        self.follower = self.new_follower()

    def new_follower(self) -> SnapshotStreams:
        """A (re)started follower on the same spool directory."""
        self.follower = SnapshotStreams(
            FOLLOWER, self._follower_sends, self.delivered.append,
            committed_index=lambda: self.committed, current_term=lambda: self.follower_term,
            spool_dir=self.spool_dir, clock=self.clock)
        return self.follower

    def _leader_sends(self, peer: int, data: bytes) -> None:
        if peer == FOLLOWER:  # frames for other nodes are lost, as to a node that is down
            self.to_follower.append(data)

    def _follower_sends(self, peer: int, data: bytes) -> None:
        if peer == LEADER:
            self.to_leader.append(data)

    def request(self, snapshot: Snapshot, term: int = TERM) -> None:
        self.leader.intercept([SnapshotRequest(LEADER, FOLLOWER, term, snapshot)])

    def in_flight_chunks(self) -> int:
        return sum(1 for data in self.to_follower
                   if type(decode(data)[0]) is wire.SnapChunk)

    def run(self, drop=lambda m: False, corrupt=lambda m: False,
            steps: int | None = None) -> None:
        """Deliver frames both ways until none is left (or for ``steps`` rounds only)."""
        for _ in range(steps or 10_000):
            if not self.to_follower and not self.to_leader:
                return
            if self.to_follower:
                data = self.to_follower.pop(0)
                msg = decode(data)[0]
                if type(msg) is wire.SnapChunk:
                    if drop(msg):
                        continue
                    if corrupt(msg):
                        flipped = bytearray(msg.data)
                        flipped[0] ^= 0xFF
                        data = wire.encode_snap_frame([wire.SnapChunk(
                            msg.frm, msg.to, msg.term, msg.index, msg.offset, msg.crc,
                            bytes(flipped))])
                    self.chunks_seen.append(msg.offset)
                self.follower.handle(decode(data))
            if self.to_leader:
                self.leader.handle(decode(self.to_leader.pop(0)))
        if steps is None:
            raise AssertionError("the stream never settled")


def decode(data: bytes) -> list:
    kind, body = wire.split_frame(data, wire.MAX_SNAP_FRAME)
    assert kind == wire.SNAP
    return wire.decode_snap_batch(body)


@pytest.fixture
def pair(tmp_path) -> Pair:
    return Pair(str(tmp_path))


def test_a_snapshot_arrives_whole_in_chunks_and_reaches_the_core_as_one_request(pair, tmp_path):
    snap = image(100)
    pair.request(snap)
    pair.run()
    assert pair.delivered == [SnapshotRequest(LEADER, FOLLOWER, TERM, snap)]
    sent, got = pair.leader.counters, pair.follower.counters
    assert sent["snapshot_chunks_sent"] == got["snapshot_chunks_received"] == 7  # 6 × 16 + 4
    assert sent["snapshot_bytes_sent"] == got["snapshot_bytes_received"] == 100
    assert sent["snapshot_streams_completed"] == got["snapshot_receives_completed"] == 1
    assert sent["snapshot_chunks_resent"] == got["snapshot_chunks_refused"] == 0
    assert os.listdir(tmp_path) == []  # the partial file is gone once installed
    assert pair.leader.sender.stream_state(FOLLOWER)["state"] == "done"


def test_no_more_than_the_window_is_in_flight_without_acknowledgements(pair):
    pair.request(image(1000))
    pair.follower.handle(decode(pair.to_follower.pop(0)))  # the offer
    pair.leader.handle(decode(pair.to_leader.pop(0)))  # REWIND 0
    assert pair.in_flight_chunks() == WINDOW
    # One acknowledgement lets exactly one more chunk out.
    pair.follower.handle(decode(pair.to_follower.pop(0)))
    pair.leader.handle(decode(pair.to_leader.pop(0)))
    assert pair.in_flight_chunks() == WINDOW
    assert pair.leader.counters["snapshot_chunks_sent"] == WINDOW + 1


def test_the_core_asking_again_does_not_start_the_stream_over(pair):
    snap = image(1000)
    pair.request(snap)
    pair.run(steps=5)
    sent = pair.leader.counters["snapshot_chunks_sent"]
    pair.request(snap)  # the core re-asks about every election timeout
    pair.request(image(2000)._replace(meta=SnapshotMeta(60, 2, (1, 2, 3))))  # newer: waits
    pair.run()
    c = pair.leader.counters
    assert c["snapshot_requests_coalesced"] == 2
    assert c["snapshot_streams_started"] == 1
    assert c["snapshot_chunks_sent"] == -(-1000 // CHUNK) and sent < c["snapshot_chunks_sent"]
    assert [r.snapshot for r in pair.delivered] == [snap]


def test_a_corrupted_chunk_is_refused_asked_for_again_and_never_installed(pair):
    snap = image(300)
    pair.request(snap)
    bad = {32, 160}  # the first copy of these chunks arrives with a byte flipped
    pair.run(corrupt=lambda m: m.offset in bad and not bad.discard(m.offset))
    assert pair.follower.counters["snapshot_chunks_refused"] == 2
    assert pair.leader.counters["snapshot_chunks_resent"] >= 2
    assert pair.delivered == [SnapshotRequest(LEADER, FOLLOWER, TERM, snap)]


def test_a_lost_chunk_is_answered_by_one_rewind_and_sent_again(pair):
    snap = image(300)
    pair.request(snap)
    lost = {64}
    pair.run(drop=lambda m: m.offset in lost and not lost.discard(m.offset))
    assert pair.delivered[0].snapshot == snap
    assert pair.follower.counters["snapshot_chunks_dropped"] >= 1  # those behind the gap
    assert pair.chunks_seen.count(64) == 1 and pair.chunks_seen.count(80) == 2


def test_a_restarted_receiver_resumes_from_its_partial_file(pair, tmp_path):
    snap = image(1000)
    pair.request(snap)
    pair.run(steps=20)  # part of it arrives
    pair.follower.close()  # the process dies: its file stays
    pair.to_follower.clear()
    pair.to_leader.clear()
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].endswith(".partial")
    held = os.path.getsize(tmp_path / files[0])
    assert 0 < held < 1000
    pair.new_follower()
    # The leader's stream has not expired yet: its next chunk (a probe after a silence) meets
    # a receiver that knows no stream, which asks for the offer again.
    pair.clock.now += snapshots.RETRANSMIT_S
    pair.leader.tick()
    pair.run()
    assert pair.delivered == [SnapshotRequest(LEADER, FOLLOWER, TERM, snap)]
    assert pair.follower.counters["snapshot_receives_resumed"] == 1
    assert pair.leader.counters["snapshot_streams_resumed"] == 1
    assert pair.leader.counters["snapshot_bytes_skipped"] == held - held % CHUNK
    assert pair.follower.counters["snapshot_bytes_received"] == 1000 - (held - held % CHUNK)


def test_a_new_term_replaces_the_stream_and_the_receiver_resumes_it(pair):
    snap = image(1000)
    pair.request(snap)
    pair.run(steps=10)
    pair.to_follower.clear()
    pair.to_leader.clear()
    pair.request(snap, term=TERM + 1)  # re-elected: a new stream of the same snapshot
    pair.run()
    assert pair.leader.counters["snapshot_streams_started"] == 2
    assert pair.follower.counters["snapshot_receives_resumed"] == 1
    assert pair.delivered == [SnapshotRequest(LEADER, FOLLOWER, TERM + 1, snap)]


def test_a_partial_file_that_fails_the_whole_check_is_started_over(pair, tmp_path):
    snap = image(100)
    pair.request(snap)
    pair.run(steps=4)
    (name,) = os.listdir(tmp_path)
    with open(tmp_path / name, "r+b") as f:  # a byte gone bad on disk after its check
        f.write(b"\xff")
    pair.run()
    assert pair.follower.counters["snapshot_receives_corrupt"] == 1
    assert pair.delivered == [SnapshotRequest(LEADER, FOLLOWER, TERM, snap)]


def test_a_silent_receiver_gets_a_probe_then_its_stream_expires(pair):
    pair.request(image(1000))
    pair.follower.handle(decode(pair.to_follower.pop(0)))
    pair.leader.handle(decode(pair.to_leader.pop(0)))
    pair.to_follower.clear()  # the window is lost; the receiver says nothing
    pair.clock.now += snapshots.RETRANSMIT_S
    pair.leader.tick()
    assert pair.in_flight_chunks() == 1  # a probe, not the whole window again
    pair.to_follower.clear()
    pair.clock.now += snapshots.STREAM_TIMEOUT_S
    pair.leader.tick()
    assert pair.leader.sender.stream_state(FOLLOWER) is None
    assert pair.leader.counters["snapshot_streams_expired"] == 1


def test_an_offer_of_what_the_follower_already_holds_is_answered_done(pair):
    pair.committed = 50
    pair.request(image(1000))
    pair.run()
    assert pair.delivered == [] and pair.leader.counters["snapshot_chunks_sent"] == 0
    assert pair.leader.counters["snapshot_streams_completed"] == 1


def test_a_deposed_leaders_offer_is_ignored(pair):
    pair.follower_term = TERM + 1
    pair.request(image(100))
    pair.run()
    assert pair.delivered == [] and pair.follower.counters["snapshot_frames_dropped"] == 1


def test_streams_are_bounded_per_leader():
    sent: list[int] = []
    leader = SnapshotStreams(LEADER, lambda p, d: sent.append(p), lambda r: None,
                             committed_index=lambda: 0, current_term=lambda: TERM,
                             spool_dir=None, clock=Clock(), max_streams=2)
    leader.intercept([SnapshotRequest(LEADER, peer, TERM, image()) for peer in (2, 3, 4)])
    assert len(leader.sender) == 2 and sent == [2, 3]


def test_the_partial_image_stays_in_memory_without_a_data_directory():
    pair = Pair(None)
    snap = image(500)
    pair.request(snap)
    pair.run()
    assert pair.delivered[0].snapshot == snap


def test_an_offer_of_another_snapshot_removes_the_old_partial_file(pair, tmp_path):
    pair.request(image(1000))
    pair.run(steps=5)
    newer = Snapshot(SnapshotMeta(70, 3, (1, 2, 3)), b"n" * 64)
    pair.to_follower.clear()
    pair.to_leader.clear()
    pair.request(newer, term=TERM + 1)
    pair.run()
    assert pair.delivered[0].snapshot == newer
    assert os.listdir(tmp_path) == []
    assert partial_name(70, 3, 64, 0).startswith("snapshot-stream-70-3-64-")


_uints = st.integers(0, 2**40)
_messages = st.one_of(
    st.builds(wire.SnapOffer, st.sampled_from([1, 2, 9]), st.sampled_from([1, 2]),
              st.integers(0, 5), _uints, _uints, st.just((1, 2)), st.just(()),
              st.integers(0, 10_000), st.integers(0, 2**32 - 1), st.integers(1, 64)),
    st.builds(wire.SnapChunk, st.sampled_from([1, 2, 9]), st.sampled_from([1, 2]),
              st.integers(0, 5), st.integers(0, 60), st.integers(0, 2000),
              st.integers(0, 2**32 - 1), st.binary(max_size=40)),
    st.builds(wire.SnapAck, st.sampled_from([1, 2, 9]), st.sampled_from([1, 2]),
              st.integers(0, 5), st.integers(0, 60), st.integers(0, 3), st.integers(0, 2000)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_messages, max_size=30))
def test_stray_stream_messages_never_crash_either_side_or_install_anything(tmp_path_factory,
                                                                            messages):
    pair = Pair(str(tmp_path_factory.mktemp("spool")))
    pair.request(image(300))  # a stream runs while the garbage arrives
    for m in messages:
        pair.leader.handle([m])
        pair.follower.handle([m])
    pair.to_follower.clear()
    pair.to_leader.clear()
    assert all(r.snapshot == image(300) for r in pair.delivered)


def test_a_stream_whose_leader_was_deposed_is_kept_whole_for_the_next_leader(pair, tmp_path):
    snap = image(100)
    pair.request(snap)
    pair.run(steps=6)  # the last chunk is still on its way
    pair.follower_term = TERM + 1  # meanwhile the follower heard of a newer term
    pair.run()
    assert pair.delivered == []  # the core would drop a deposed leader's request
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [100]
    pair.request(snap, term=TERM + 1)  # the next leader offers the same snapshot
    pair.run()
    assert pair.delivered == [SnapshotRequest(LEADER, FOLLOWER, TERM + 1, snap)]
    assert pair.follower.counters["snapshot_bytes_received"] == 100  # nothing sent twice
