"""QueueState, the queue's replicated state machine, driven only through its log entries
(``apply_entry(index, encode_entry(now, [...]))``) with explicit times: pure, no sockets."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import msgpack
import pytest

from fabric.tasks.state import (
    CANCEL,
    DISPATCH,
    EXPIRE,
    FINISH,
    FIRE,
    PURGE,
    RETRY,
    SPEC_FIELDS,
    SUBMIT,
    QueueState,
    encode_entry,
)

Q = ("t", "")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp()


def spec(**fields: Any) -> list[Any]:
    """A SUBMIT's spec as the front builds it (SPEC_FIELDS order)."""
    values = {"type": "t", "payload": None, "key": None, "key_kept": False, "run_at": 0.0,
              "every": 0.0, "cron": "", "retries": 0, "timeout": 0.0, "version": "",
              "backoff": 1.0, **fields}
    return [values[name] for name in SPEC_FIELDS]


class Log:
    """A QueueState and the log it was fed (indexes 1, 2, ...)."""

    def __init__(self, **bounds: Any) -> None:
        self.state = QueueState(**bounds)
        self.entries: list[tuple[int, bytes]] = []

    def raw(self, data: bytes) -> list[Any]:
        index = len(self.entries) + 1
        self.entries.append((index, data))
        return self.state.apply_entry(index, data)

    def __call__(self, now: float, *commands: list[Any]) -> list[Any]:
        return self.raw(encode_entry(now, list(commands)))

    def one(self, now: float, command: list[Any]) -> Any:
        (result,) = self(now, command)
        return result

    def task(self, task_id: str) -> Any:
        return self.state.tasks[task_id]


def views(state: QueueState) -> dict[str, Any]:
    return {task_id: task.view() for task_id, task in state.tasks.items()}


def test_submit_dispatch_finish_ok():
    q = Log()
    assert q.one(100, [SUBMIT, "a", spec(payload={"n": 1})]) == ["a", True]
    a = q.task("a")
    assert (a.state, a.submitted, a.run_at, list(q.state.waiting_ids(Q))) == \
        ("waiting", 100.0, 100.0, ["a"])
    assert q.one(101, [DISPATCH, "a", "w1"]) == 1
    assert (a.state, a.epoch, a.attempts, a.worker, a.started) == ("running", 1, 1, "w1", 101)
    assert q.one(101, [DISPATCH, "a", "w2"]) == 0  # not waiting: nothing happens
    assert q.one(102, [FINISH, "a", 1, True, {"out": 2}, 0.0]) == ""
    assert (a.state, a.result, a.epoch, a.finished, a.worker) == ("done", {"out": 2}, 1, 102, "")
    counters = q.state.counters
    assert (counters["submitted"], counters["dispatched"], counters["completed"]) == (1, 1, 1)
    assert (counters["zombie_results_refused"], q.state.open) == (0, 0)
    assert q.state.take_results() == {1: [["a", True]], 2: [1], 3: [0], 4: [""]}


def test_user_key_kept_for_good_automatic_key_purged_with_its_task():
    q = Log(keep_s=60)
    assert q.one(0, [SUBMIT, "a", spec(key="k:user", key_kept=True)]) == ["a", True]
    assert q.one(0, [SUBMIT, "b", spec(key="o:auto", key_kept=False)]) == ["b", True]
    assert q.one(1, [SUBMIT, "a2", spec(key="k:user", key_kept=True)]) == ["a", False]
    assert q.one(1, [SUBMIT, "b2", spec(key="o:auto")]) == ["b", False]
    q(2, [DISPATCH, "a", "w"], [DISPATCH, "b", "w"])
    q(3, [FINISH, "a", 1, True, "x", 0.0], [FINISH, "b", 1, True, "y", 0.0])
    assert q.one(4, [SUBMIT, "a3", spec(key="k:user", key_kept=True)]) == ["a", False]
    assert q.one(30, [PURGE]) == 0  # not older than keep_s yet
    assert q.one(100, [PURGE]) == 2
    assert "a" not in q.state.tasks and "b" not in q.state.tasks
    assert q.one(101, [SUBMIT, "a4", spec(key="k:user", key_kept=True)]) == ["a", False]
    assert q.one(10**6, [SUBMIT, "a5", spec(key="k:user", key_kept=True)]) == ["a", False]
    assert q.one(101, [SUBMIT, "b4", spec(key="o:auto")]) == ["b4", True]  # forgotten
    assert q.state.counters["deduplicated"] == 5 and q.state.counters["submitted"] == 3
    assert set(q.state.tasks) == {"b4"}


def test_fencing_refuses_the_lost_attempt_result():
    q = Log()
    q(0, [SUBMIT, "a", spec(retries=3)])
    assert q.one(1, [DISPATCH, "a", "w1"]) == 1
    assert q.one(20, [EXPIRE, "a", 1, "lease lapsed"]) == ""
    a = q.task("a")
    assert (a.state, a.redelivered, a.worker, a.epoch) == ("waiting", True, "", 1)
    assert a.errors == ["attempt 1 lost: lease lapsed"] and q.state.counters["expired"] == 1
    assert q.one(21, [DISPATCH, "a", "w2"]) == 2
    reason = q.one(22, [FINISH, "a", 1, True, "zombie", 0.0])
    assert reason and "not current" in reason
    assert q.state.counters["zombie_results_refused"] == 1
    assert (a.state, a.epoch, a.worker, a.result) == ("running", 2, "w2", None)
    assert q.one(22, [EXPIRE, "a", 1, "again"]) != ""  # a stale expiry changes nothing
    assert a.state == "running" and len(a.errors) == 1
    assert q.one(23, [FINISH, "a", 2, True, "real", 0.0]) == ""
    assert (a.state, a.result, q.state.counters["completed"]) == ("done", "real", 1)


def test_result_sent_twice_is_taken_once_and_is_no_zombie():
    q = Log()
    q(0, [SUBMIT, "a", spec()])
    q(1, [DISPATCH, "a", "w"])
    assert q.one(2, [FINISH, "a", 1, True, "first", 0.0]) == ""
    assert q.one(3, [FINISH, "a", 1, True, "second", 0.0]) == ""
    assert q.task("a").result == "first" and q.task("a").finished == 2
    assert q.state.counters["zombie_results_refused"] == 0
    assert q.state.counters["completed"] == 1
    assert q.one(4, [FINISH, "a", 7, True, "bogus", 0.0]) != ""
    assert q.one(4, [FINISH, "nope", 1, True, "?", 0.0]) == "no task nope"
    assert q.state.counters["zombie_results_refused"] == 2


def test_retries_back_off_then_dead_with_error_history():
    q = Log()
    q(0, [SUBMIT, "a", spec(retries=2)])
    q(1, [DISPATCH, "a", "w"])
    assert q.one(2, [FINISH, "a", 1, False, "boom 1", 10.0]) == ""
    a = q.task("a")
    assert (a.state, a.run_at, a.errors, a.worker) == ("failed", 10.0, ["boom 1"], "")
    assert q.one(5, [FIRE, "a"]) == "not due" and a.state == "failed"
    assert q.state.due(9.9, set()) == [] and q.state.due(10, set()) == ["a"]
    assert q.one(10, [FIRE, "a"]) == ""
    assert a.state == "waiting" and a.lateness is None  # a back-off is not a delay asked for
    assert q.one(11, [DISPATCH, "a", "w"]) == 2
    assert q.one(12, [FINISH, "a", 2, False, "boom 2", 0.0]) == ""  # retry_at past: waits
    assert a.state == "waiting" and list(q.state.waiting_ids(Q)) == ["a"]
    assert q.one(13, [DISPATCH, "a", "w"]) == 3
    assert q.one(14, [FINISH, "a", 3, False, "boom 3", 99.0]) == ""
    assert (a.state, a.attempts, a.finished) == ("dead", 3, 14)
    assert a.errors == ["boom 1", "boom 2", "boom 3"]
    counters = q.state.counters
    assert (counters["failed"], counters["dead"], q.state.open) == (3, 1, 0)
    assert q.one(15, [FIRE, "a"]) == "not due"


def test_lost_attempts_are_no_failures_but_a_task_losing_max_lost_ends_dead():
    q = Log(max_lost=2)
    q(0, [SUBMIT, "a", spec(retries=0)])
    q(1, [DISPATCH, "a", "w1"])
    q(2, [EXPIRE, "a", 1, "worker w1 left"])
    assert q.task("a").state == "waiting"
    q(3, [DISPATCH, "a", "w2"])
    assert q.one(4, [EXPIRE, "a", 2, "worker w2 left"]) == ""
    a = q.task("a")
    assert (a.state, a.attempts, len(a.errors)) == ("dead", 2, 2)
    assert a.errors[1] == "attempt 2 lost: worker w2 left"


def test_delayed_task_fires_when_due_with_its_lateness():
    q = Log()
    assert q.one(100, [SUBMIT, "d", spec(run_at=150.0)]) == ["d", True]
    d = q.task("d")
    assert (d.state, d.run_at, list(q.state.waiting_ids(Q))) == ("scheduled", 150.0, [])
    assert q.state.due(149.99, set()) == [] and q.state.next_timer() == 150.0
    assert q.state.due(150, set()) == ["d"] and q.state.due(150, {"d"}) == []
    assert q.one(140, [FIRE, "d"]) == "not due" and d.state == "scheduled"
    assert q.one(152.5, [FIRE, "d"]) == ""
    assert (d.state, d.lateness, list(q.state.waiting_ids(Q))) == ("waiting", 2.5, ["d"])
    assert q.state.due(1000, set()) == [] and q.state.counters["fired"] == 1
    assert q.one(153, [FIRE, "d"]) == "not due"


def test_periodic_every_makes_one_child_per_firing_and_skips_missed_periods():
    q = Log()
    assert q.one(990, [SUBMIT, "p", spec(every=10.0, payload="tick", retries=2)]) == \
        ["p", True]
    p = q.task("p")
    assert (p.state, p.run_at, q.state.due(1000, set())) == ("scheduled", 1000.0, ["p"])
    assert q.one(1000, [FIRE, "p"]) == ""
    child = q.task("p@1")
    assert (child.state, child.parent, child.payload, child.retries) == \
        ("waiting", "p", "tick", 2)
    assert not child.periodic and child.lateness == 0.0
    assert (p.state, p.run_at, p.fired, p.skipped) == ("scheduled", 1010.0, 1, 0)
    assert q.one(1005, [FIRE, "p"]) == "not due"
    assert q.one(1045, [FIRE, "p"]) == ""  # 1010 fired late; 1020, 1030, 1040 missed
    assert [i for i in q.state.tasks if i.startswith("p@")] == ["p@1", "p@2"]
    assert q.task("p@2").lateness == 35.0
    assert (p.fired, p.skipped, p.run_at) == (2, 3, 1050.0)
    assert p.run_at > 1045 and (p.run_at - 1000) % 10 == 0
    assert q.one(1050, [FIRE, "p"]) == "" and p.run_at == 1060.0 and p.skipped == 3
    assert list(q.state.waiting_ids(Q)) == ["p@1", "p@2", "p@3"]
    assert q.state.open == 4


def test_periodic_cron_fires_on_its_utc_grid():
    q = Log()
    start = utc(2024, 1, 1, 12, 0)
    q(utc(2024, 1, 1, 11, 58), [SUBMIT, "c", spec(cron="*/5 * * * *", run_at=start)])
    c = q.task("c")
    assert (c.state, c.run_at) == ("scheduled", start)
    assert q.one(start, [FIRE, "c"]) == ""
    assert (c.run_at, c.skipped, q.task("c@1").state) == (utc(2024, 1, 1, 12, 5), 0, "waiting")
    late = utc(2024, 1, 1, 12, 17)  # 12:05 fired late; 12:10 and 12:15 missed
    assert q.one(late, [FIRE, "c"]) == ""
    assert (c.fired, c.skipped, c.run_at) == (2, 2, utc(2024, 1, 1, 12, 20))
    assert q.task("c@2").lateness == 12 * 60
    assert "c@3" not in q.state.tasks


@pytest.mark.parametrize("where", ["waiting", "scheduled", "failed", "running"])
def test_cancel_ends_an_open_task(where):
    q = Log()
    q(0, [SUBMIT, "a", spec(run_at=50.0 if where == "scheduled" else 0.0, retries=1)])
    if where in ("failed", "running"):
        q(1, [DISPATCH, "a", "w"])
    if where == "failed":
        q(2, [FINISH, "a", 1, False, "boom", 30.0])
    assert q.task("a").state == where
    assert q.one(5, [CANCEL, "a"]) == ""
    a = q.task("a")
    assert (a.state, a.finished, a.worker, q.state.open) == ("cancelled", 5, "", 0)
    assert q.state.counters["cancelled"] == 1
    assert list(q.state.waiting_ids(Q)) == [] and q.state.due(100, set()) == []
    late = q.one(6, [FINISH, "a", 1, True, "late", 0.0])  # "" when failed: taken already
    assert (late != "") == (where != "failed") and a.result is None
    assert a.state == "cancelled" and q.state.counters["completed"] == 0
    assert q.one(7, [CANCEL, "a"]) == "task a is cancelled already"


def test_cancel_finished_refused_and_retry_dead_or_cancelled():
    q = Log()
    q(0, [SUBMIT, "ok", spec()], [SUBMIT, "dead", spec()], [SUBMIT, "gone", spec()])
    q(1, [DISPATCH, "ok", "w"], [DISPATCH, "dead", "w"], [DISPATCH, "gone", "w"])
    q(2, [FINISH, "ok", 1, True, 1, 0.0], [FINISH, "dead", 1, False, "boom", 0.0])
    assert q.one(3, [CANCEL, "ok"]) == "task ok is done already"
    assert q.one(3, [CANCEL, "nope"]) == "no task nope"
    assert "only a dead or cancelled" in q.one(3, [RETRY, "ok"])
    assert q.one(3, [CANCEL, "gone"]) == ""
    assert q(4, [RETRY, "dead"], [RETRY, "gone"]) == ["", ""]
    dead = q.task("dead")
    assert (dead.state, dead.attempts, dead.epoch, dead.finished) == ("waiting", 0, 1, 0.0)
    assert list(q.state.waiting_ids(Q)) == ["dead", "gone"]
    assert q.state.counters["retried"] == 2 and q.state.open == 2
    assert q.one(5, [DISPATCH, "dead", "w"]) == 2  # the epoch goes on: old zombies stay out
    assert q.one(6, [FINISH, "dead", 1, True, "zombie", 0.0]) == ""  # taken already, no-op
    assert dead.state == "running" and dead.result is None


def test_bounds_max_open_and_max_keys():
    q = Log(max_open=2, max_keys=1)
    assert q(0, [SUBMIT, "a", spec(key="k:1", key_kept=True)], [SUBMIT, "b", spec()]) == \
        [["a", True], ["b", True]]
    full = q.one(1, [SUBMIT, "c", spec()])
    assert full[0] is None and full[1].startswith("queue full")
    assert q.one(1, [SUBMIT, "c", spec(key="k:1", key_kept=True)]) == ["a", False]
    assert q.state.counters["refused_full"] == 1 and "c" not in q.state.tasks
    q(2, [CANCEL, "b"])
    keys = q.one(3, [SUBMIT, "c", spec(key="k:2", key_kept=True)])
    assert keys == [None, "queue full: 1 keys kept"] and q.state.counters["refused_full"] == 2
    assert q.one(3, [SUBMIT, "c", spec(key="o:x", key_kept=False)]) == ["c", True]
    assert "full" in q.one(4, [RETRY, "b"])


@pytest.mark.parametrize("data", [
    b"\xc1", b"\x92\x01", b"\x92\x01\x91", msgpack.packb([1, 2, 3]), msgpack.packb("hi"),
    msgpack.packb(["now", []]), msgpack.packb([1.0, {"not": "a list"}]),
    msgpack.packb([1.0, []]) + b"\x01"])
def test_entry_that_does_not_decode_is_counted_and_skipped(data):
    q = Log()
    q(0, [SUBMIT, "a", spec()])
    before = views(q.state)
    assert q.raw(data) == []
    assert q.state.counters["malformed_commands"] == 1 and q.state.applied_index == 2
    assert views(q.state) == before and q.state.counters["submitted"] == 1


@pytest.mark.parametrize("command", [
    [99, "a"], [], "text", 7, {"0": 1}, [SUBMIT, "x", spec(cron="61 * * * *")],
    [SUBMIT, "x", spec(cron="@never")], [SUBMIT, "x", spec(every=-1.0)],
    [SUBMIT, "x", spec(every=float("inf"))], [SUBMIT, "x", spec(retries="many")],
    [SUBMIT, "x", ["t"]], [SUBMIT, "x", 5], [FINISH, "a"], [FINISH, "a", "one", True, 1, 0],
    [DISPATCH, ["a"], "w"], [EXPIRE, "a"], [FIRE, {}]])
def test_malformed_command_changes_nothing(command):
    q = Log()
    q(0, [SUBMIT, "a", spec()])
    before, counters = views(q.state), dict(q.state.counters)
    assert q(1, [CANCEL, "missing"], command, [DISPATCH, "a", "w"]) == \
        ["no task missing", "malformed", 1]
    assert q.state.applied_index == 2 and "x" not in q.state.tasks
    counters.update(malformed_commands=1, dispatched=1)
    assert q.state.counters == counters
    assert {i: v for i, v in views(q.state).items() if i != "a"} == \
        {i: v for i, v in before.items() if i != "a"}


def test_noop_and_old_entries_are_ignored():
    q = Log()
    q(0, [SUBMIT, "a", spec()])
    digest, counters = views(q.state), dict(q.state.counters)
    assert q.raw(b"") == [] and q.raw(b"\x00raft core") == [] and q.raw(b"\x00") == []
    assert q.state.applied_index == 4 and q.state.counters == counters
    assert q.state.apply_entry(2, encode_entry(1, [[CANCEL, "a"]])) == []  # applied already
    assert views(q.state) == digest and q.task("a").state == "waiting"


def scenario(q: Log) -> None:
    q(0, [SUBMIT, "a", spec(retries=1)], [SUBMIT, "b", spec(type="u", version="2")],
      [SUBMIT, "c", spec(key="k:c", key_kept=True)], [SUBMIT, "d", spec(run_at=500.0)],
      [SUBMIT, "p", spec(every=60.0, run_at=100.0)], [SUBMIT, "e", spec(key="o:e", retries=1)])
    q(1, [DISPATCH, "a", "w"], [DISPATCH, "c", "w"], [DISPATCH, "e", "w"])
    q(2, [FINISH, "a", 1, False, "boom", 300.0], [FINISH, "c", 1, True, [1, 2], 0.0])
    q(3, [SUBMIT, "f", spec()], [SUBMIT, "g", spec(key="k:c", key_kept=True)])
    q(100, [FIRE, "p"], [EXPIRE, "e", 1, "lost"], [CANCEL, "f"])
    q.raw(b"garbage")
    q(101, [DISPATCH, "p@1", "w"], [SUBMIT, "h", spec()], [RETRY, "f"])


def test_replicas_fed_the_same_log_agree_and_snapshots_restore_it():
    one, two = Log(keep_s=10), Log(keep_s=10)
    scenario(one)
    for index, data in one.entries:
        two.state.apply_entry(index, data)
    assert one.state.state_digest() == two.state.state_digest()
    copy = QueueState(keep_s=10)
    copy.restore(one.state.snapshot())
    assert copy.state_digest() == one.state.state_digest()
    assert copy.applied_index == one.state.applied_index and copy.open == one.state.open
    assert views(copy) == views(one.state) and copy.counters == one.state.counters
    for queue in (Q, ("u", "2"), ("u", "")):
        assert list(copy.waiting_ids(queue)) == list(one.state.waiting_ids(queue))
    assert list(copy.waiting_ids(Q)) == ["e", "h", "f"]
    for now in (99, 100, 160, 300, 500, 10**6):
        assert sorted(copy.due(now, set())) == sorted(one.state.due(now, set()))
    assert sorted(copy.due(500, set())) == ["a", "d", "p"]
    more = [encode_entry(600, [[FIRE, "a"], [FIRE, "d"], [FIRE, "p"], [PURGE]]),
            encode_entry(601, [[SUBMIT, "i", spec(key="o:e")], [DISPATCH, "e", "w2"]])]
    for offset, data in enumerate(more, start=len(one.entries) + 1):
        assert copy.apply_entry(offset, data) == one.state.apply_entry(offset, data)
    assert copy.state_digest() == one.state.state_digest()


def test_restore_refuses_an_unknown_snapshot_version():
    q = Log()
    scenario(q)
    fields = msgpack.unpackb(q.state.snapshot(), raw=False, strict_map_key=False)
    fields["v"] = 2
    fresh = QueueState()
    with pytest.raises(ValueError, match="version"):
        fresh.restore(msgpack.packb(fields, use_bin_type=True))


def test_waiting_ids_and_due_skip_tasks_that_left():
    q = Log()
    q(0, *[[SUBMIT, i, spec()] for i in "abc"],
      [SUBMIT, "d", spec(run_at=50.0)], [SUBMIT, "e", spec(run_at=60.0)])
    assert q.one(1, [DISPATCH, "b", "w"]) == 1  # not at the head of its queue
    assert list(q.state.waiting_ids(Q)) == ["a", "c"]
    q(2, [CANCEL, "a"], [CANCEL, "d"])
    assert list(q.state.waiting_ids(Q)) == ["c"]
    assert q.state.due(100, set()) == ["e"]
    q(100, [FIRE, "e"])
    assert q.state.due(100, set()) == [] and list(q.state.waiting_ids(Q)) == ["c", "e"]


# ---------------------------------------------------------------- bugs found (state.py)

def test_finish_with_an_infinite_epoch_is_malformed():
    q = Log()
    q(0, [SUBMIT, "a", spec()])
    q(1, [DISPATCH, "a", "w"])
    assert q(2, [FINISH, "a", float("inf"), True, 1, 0.0]) == ["malformed"]


def test_cron_that_never_fires_makes_no_endless_children():
    q = Log()
    q(0, [SUBMIT, "c", spec(cron="0 0 30 2 *")])
    results = q(0, [FIRE, "c"], [FIRE, "c"], [FIRE, "c"])
    children = [i for i in q.state.tasks if i.startswith("c@")]
    assert len(children) <= 1 and "malformed" not in results[:len(children)]


def test_cron_schedule_first_fires_on_its_grid():
    q = Log()
    q(utc(2024, 1, 1, 12, 3), [SUBMIT, "c", spec(cron="*/5 * * * *")])
    assert q.task("c").run_at == utc(2024, 1, 1, 12, 5)


def test_restored_replica_counts_kept_keys_of_purged_tasks():
    q = Log(max_keys=1, keep_s=10)
    q(0, [SUBMIT, "a", spec(key="k:1", key_kept=True)])
    q(1, [CANCEL, "a"])
    q(100, [PURGE])
    copy = QueueState(max_keys=1, keep_s=10)
    copy.restore(q.state.snapshot())
    data = encode_entry(101, [[SUBMIT, "b", spec(key="k:2", key_kept=True)]])
    assert copy.apply_entry(4, data) == q.state.apply_entry(4, data)


def test_retried_task_waits_once_behind_the_others():
    q = Log()
    q(0, [SUBMIT, "x", spec()], [SUBMIT, "y", spec()], [CANCEL, "x"], [RETRY, "x"])
    copy = QueueState()
    copy.restore(q.state.snapshot())
    assert list(copy.waiting_ids(Q)) == ["y", "x"]
    assert list(q.state.waiting_ids(Q)) == ["y", "x"]


def test_finish_of_epoch_zero_is_refused():
    q = Log()
    q(0, [SUBMIT, "a", spec()])
    q(1, [DISPATCH, "a", "w"])
    assert q.one(2, [FINISH, "a", 0, True, "forged", 0.0]) != ""


def test_counts_per_state_follow_every_change():
    q = Log(max_finished=1, keep_s=0.0)
    q(0, [SUBMIT, "a", spec()], [SUBMIT, "b", spec(run_at=5.0)], [SUBMIT, "c", spec()],
      [SUBMIT, "p", spec(every=1.0)])
    q(1, [DISPATCH, "a", "w"], [DISPATCH, "c", "w"])
    q(2, [FINISH, "a", 1, True, 1, 0.0], [EXPIRE, "c", 1, "gone"], [CANCEL, "c"])
    q(6, [FIRE, "b"], [FIRE, "p"], [PURGE])
    brute = Counter(task.state for task in q.state.tasks.values())
    assert q.state.counts() == dict(brute)
    restored = QueueState()
    restored.restore(q.state.snapshot())
    assert restored.counts() == dict(brute)


def test_stale_timers_and_queue_entries_are_compacted_on_every_replica():
    q = Log()
    for i in range(3000):
        q(0, [SUBMIT, f"d{i}", spec(run_at=1e9)], [SUBMIT, f"w{i}", spec()])
        q(1, [CANCEL, f"d{i}"], [CANCEL, f"w{i}"])
    assert len(q.state.timers) == 3000  # a follower never asks due(): nothing popped them
    q(2, [PURGE])
    assert len(q.state.timers) == 0 and not q.state.waiting


def test_the_next_slot_of_a_schedule_is_always_after_now():
    q = Log()
    q(0.1, [SUBMIT, "p", spec(run_at=0.1, every=0.1)])
    for _ in range(1, 2000):
        now = q.task("p").run_at
        assert q.one(now, [FIRE, "p"]) == ""
        assert q.task("p").run_at > now
