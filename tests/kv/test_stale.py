"""The conflict rule for writes accepted without a quorum (docs/kv.md, "Quorum-less writes")."""
from __future__ import annotations

import pytest

from nameservice.kv import (
    Batch,
    CasResult,
    DecodeError,
    KeyValue,
    Put,
    Request,
    StaleBacklogFull,
    StaleConflict,
    StaleOverlay,
    StaleWrite,
)

from ._driver import Driver


def test_stale_write_applies_when_key_unchanged_since_the_node_saw_it() -> None:
    d = Driver()
    d.do(Put(b"cfg", b"old"))
    seen = d.machine.get(b"cfg").mod_revision
    result = d.do(StaleWrite(b"cfg", b"new", seen))
    assert isinstance(result, CasResult) and result.succeeded
    assert d.machine.get(b"cfg").value == b"new"


def test_stale_write_conflicts_when_the_majority_changed_the_key_meanwhile() -> None:
    d = Driver()
    d.do(Put(b"cfg", b"old"))
    seen = d.machine.get(b"cfg").mod_revision
    d.do(Put(b"cfg", b"majority"))  # acknowledged through the log during the partition
    result = d.do(StaleWrite(b"cfg", b"minority", seen))
    assert result == CasResult(False, 2, d.machine.get(b"cfg"))
    assert d.machine.get(b"cfg").value == b"majority"
    assert d.machine.stats()["stale_conflicts"] == 1


def test_stale_create_of_an_absent_key_uses_base_revision_zero() -> None:
    d = Driver()
    assert d.do(StaleWrite(b"new", b"v", 0)).succeeded
    assert not d.do(StaleWrite(b"new", b"w", 0)).succeeded  # another node created it first


def test_stale_delete() -> None:
    d = Driver()
    d.do(Put(b"k", b"v"))
    assert d.do(StaleWrite(b"k", None, 1)) == CasResult(True, 2, None)
    assert d.machine.get(b"k") is None


def test_replayed_stale_write_with_a_session_is_not_a_false_conflict() -> None:
    d = Driver()
    node = d.session()
    d.do(Put(b"k", b"v"))
    replay = Request(node, 1, StaleWrite(b"k", b"w", 1))
    assert d.do(replay).succeeded
    assert d.do(replay).succeeded  # a retry after a leader change: same answer
    assert d.machine.stats()["stale_conflicts"] == 0


# --- the node-side overlay, end to end with the state machine ---------------------------------


def _node_replays(d: Driver, overlay: StaleOverlay, client: int, first_seq: int) -> list:
    """What a node does when a leader is reachable again: propose, then settle each answer."""
    pending = overlay.pending()
    requests = [Request(client, first_seq + i, p.command()) for i, p in enumerate(pending)]
    applied = d.entry(Batch(tuple(requests)))
    return [overlay.settle(p, r) for p, r in zip(pending, applied.results)]


def test_overlay_serves_stale_reads_at_once_and_replays_on_heal() -> None:
    d = Driver()
    d.do(Put(b"cfg/a", b"1"))
    d.do(Put(b"cfg/b", b"1"))
    node = d.session()
    overlay = StaleOverlay()
    # partition: the minority node accepts writes against its applied state
    overlay.write(b"cfg/a", b"2", d.machine.get(b"cfg/a"))
    overlay.write(b"cfg/c", b"new", d.machine.get(b"cfg/c"))
    overlay.write(b"cfg/b", None, d.machine.get(b"cfg/b"))
    assert overlay.read(b"cfg/a", d.machine.get(b"cfg/a")).value == b"2"
    assert overlay.read(b"cfg/b", d.machine.get(b"cfg/b")) is None
    assert [(kv.key, kv.value) for kv in overlay.range(b"cfg/", d.machine.range(b"cfg/"))] == [
        (b"cfg/a", b"2"), (b"cfg/c", b"new"),
    ]
    # heal: replayed through the log, nothing changed meanwhile, so all apply
    assert _node_replays(d, overlay, node, 1) == [None, None, None]
    assert len(overlay) == 0
    assert [(kv.key, kv.value) for kv in d.machine.range(b"cfg/")] == [
        (b"cfg/a", b"2"), (b"cfg/c", b"new"),
    ]


def test_overlay_reports_a_conflict_when_the_majority_wrote_the_key() -> None:
    d = Driver()
    d.do(Put(b"cfg", b"old"))
    node = d.session()
    overlay = StaleOverlay()
    overlay.write(b"cfg", b"minority", d.machine.get(b"cfg"))
    d.do(Put(b"cfg", b"majority"))
    [conflict] = _node_replays(d, overlay, node, 1)
    assert conflict == StaleConflict(b"cfg", b"minority", 1, d.machine.get(b"cfg"))
    assert list(overlay.conflicts) == [conflict] and len(overlay) == 0
    assert d.machine.get(b"cfg").value == b"majority"


def test_repeated_local_writes_collapse_and_keep_the_first_base() -> None:
    d = Driver()
    d.do(Put(b"k", b"0"))
    node = d.session()
    overlay = StaleOverlay()
    overlay.write(b"k", b"1", d.machine.get(b"k"))
    overlay.write(b"k", b"2", d.machine.get(b"k"))
    assert overlay.commands() == [StaleWrite(b"k", b"2", 1)]
    assert _node_replays(d, overlay, node, 1) == [None]
    assert d.machine.get(b"k").value == b"2"


def test_write_made_while_a_replay_is_in_flight_rebases_on_our_own_write() -> None:
    d = Driver()
    node = d.session()
    overlay = StaleOverlay()
    overlay.write(b"k", b"1", None)
    [proposed] = overlay.pending()
    applied = d.entry(Request(node, 1, proposed.command()))
    overlay.write(b"k", b"2", None)  # arrives before the answer
    assert overlay.settle(proposed, applied.results[0]) is None
    assert overlay.commands() == [StaleWrite(b"k", b"2", d.machine.get(b"k").mod_revision)]
    assert _node_replays(d, overlay, node, 2) == [None]
    assert d.machine.get(b"k").value == b"2"


def test_unanswered_replay_retried_in_a_new_session_is_not_a_conflict() -> None:
    d = Driver()
    overlay = StaleOverlay()
    overlay.write(b"k", b"v", None)
    [proposed] = overlay.pending()
    d.do(Request(d.session(), 1, proposed.command()))  # applied, but the answer was lost
    rejected = d.do(Request(99, 1, proposed.command()))  # session gone: outcome unknown
    assert overlay.settle(proposed, rejected) is None and len(overlay) == 1
    assert _node_replays(d, overlay, d.session(), 1) == [None]
    assert len(overlay) == 0 and overlay.conflict_count == 0


def test_overlay_is_bounded_and_persists() -> None:
    overlay = StaleOverlay(max_pending=2)
    overlay.write(b"a", b"1", None)
    overlay.write(b"b", None, KeyValue(b"b", b"x", 1, 4, 1, 0))
    overlay.write(b"a", b"again", None)  # same key: still two pending
    with pytest.raises(StaleBacklogFull):
        overlay.write(b"c", b"1", None)
    copy = StaleOverlay(max_pending=2)
    copy.load(overlay.encode())
    assert copy.commands() == overlay.commands() == [
        StaleWrite(b"a", b"again", 0), StaleWrite(b"b", None, 4),
    ]
    for garbage in (b"", b"\x01\xc1", b"\x01\x91\x93\xc4\x00\xc0\x00", b"\x02\x90"):
        with pytest.raises(DecodeError):
            copy.load(garbage)
