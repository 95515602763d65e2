"""The conflict rule for writes accepted without a quorum (docs/kv.md, "Quorum-less writes")."""
from __future__ import annotations

from nameservice.kv import CasResult, Put, Request, StaleWrite

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
