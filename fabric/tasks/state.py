"""The queue's replicated state: every task, and what its log entries do to them (pure, no I/O).

Every queue replica holds one ``QueueState``; the leader proposes entries, every replica applies
the same entries in the same order and ends in the same state. Nothing here reads a clock:
each entry carries the leader's time (``now``), and whatever is random (a retry's jitter) is
chosen by the leader and written into the entry.

A task's life::

    scheduled ──fire──► waiting ──dispatch──► running ──finish ok──► done
        ▲                  ▲                     │
        │                  └──────expire─────────┤   (lease lapsed, worker lost: a new
        │                                        │    attempt, flagged redelivered)
        └────── failed ◄──────finish error───────┤   (retries left: back-off, then again)
                                                 └──► dead   (no retries left)
    cancel: scheduled, failed, waiting or running ──► cancelled;  retry: dead or cancelled ──►
    waiting, with a fresh count of attempts.

A periodic task (``every`` or ``cron``) is a *schedule*: it stays ``scheduled`` and each firing
makes a child task ``<id>@<n>`` (waiting at once); missed firings are not made up (see FIRE).

**Fencing.** Each dispatch starts an attempt numbered ``epoch`` (1, 2, ...). A worker's result
names its attempt; it is accepted only if that attempt is the task's current one and the task
is running. Anything else — a zombie whose lease lapsed, a result sent twice, a result for a
cancelled task — is refused (``zombie_results_refused``) and changes nothing.

Entries are msgpack ``[now, [command, ...]]``; each command is a list starting with its code:

* ``[SUBMIT, id, spec]`` — a new task (spec: ``SPEC_FIELDS``). A key seen before returns its
  first task (``[first_id, False]``) and makes nothing: keys given by the user are kept for
  good; the key a client makes for a submission without one is kept as long as its task.
* ``[DISPATCH, id, worker]`` — a waiting task starts its next attempt on ``worker``: the
  attempt's epoch, or 0 (not waiting any more: nothing happens).
* ``[FINISH, id, epoch, ok, value, retry_at]`` — an attempt's result (ok) or error: "" if
  accepted, else why it was refused. An error with retries left makes the task ``failed``
  until ``retry_at`` (the leader's back-off with jitter); without, ``dead``.
* ``[EXPIRE, id, epoch, reason]`` — the attempt was lost (its lease lapsed, its worker left):
  the task waits again, its next attempt flagged ``redelivered``. A lost attempt is no
  failure (``retries`` counts failures), but a task that loses ``max_lost`` attempts goes
  ``dead`` (a task that kills its workers must end).
* ``[FIRE, id]`` — a scheduled or failed task whose time came: waiting (a schedule makes its
  child). Missed firings of a schedule (no leader for a while) are not made up: it fires once,
  counts the periods it skipped (``skipped``) and moves to its next time after ``now``.
* ``[CANCEL, id]``, ``[RETRY, id]`` — "" or why not.
* ``[PURGE]`` — finished tasks older than ``keep_s`` go (their automatic keys with them), and
  the oldest beyond ``max_finished``.

A command that does not decode is counted (``malformed_commands``) and its result is
``"malformed"``: every replica decides alike. Bounds: at most ``max_open`` tasks not finished
(a submit beyond is refused: "queue full"), ``max_keys`` user keys, ``max_finished`` finished
tasks kept, ``MAX_ERRORS`` errors kept per task.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgpack

from fabric.tasks.cron import Cron, CronError

log = logging.getLogger(__name__)

__all__ = ["ACTIVE", "FINISHED", "QueueState", "Task", "SPEC_FIELDS", "encode_entry"]

SUBMIT, DISPATCH, FINISH, EXPIRE, FIRE, CANCEL, RETRY, PURGE = range(1, 9)
SPEC_FIELDS = ("type", "payload", "key", "key_kept", "run_at", "every", "cron", "retries",
               "timeout", "version", "backoff")
"""A submit's spec, in order (see ``fabric.tasks.protocol`` for each field's meaning)."""
FINISHED = frozenset({"done", "dead", "cancelled"})
ACTIVE = frozenset({"waiting", "running"})
MAX_ERRORS = 10
SNAPSHOT_VERSION = 1
_TASK_FIELDS = ("id", "type", "version", "payload", "key", "key_kept", "state", "attempts",
                "epoch", "retries", "timeout", "backoff", "run_at", "submitted", "started",
                "finished", "worker", "result", "errors", "every", "cron", "parent", "fired",
                "skipped", "lateness", "redelivered", "recorded", "lost", "order")


def encode_entry(now: float, commands: list[list[Any]]) -> bytes:
    """One log entry of ``commands`` at the leader's time ``now``."""
    return msgpack.packb([now, commands], use_bin_type=True)


class Task:
    """One task as every replica holds it."""

    __slots__ = _TASK_FIELDS

    def __init__(self, id: str, type: str, payload: Any, **fields: Any) -> None:
        self.id, self.type, self.payload = id, type, payload
        self.version: str = fields.get("version") or ""
        self.key: str | None = fields.get("key")
        self.key_kept: bool = bool(fields.get("key_kept"))
        self.state: str = fields.get("state", "")  # "": made, not placed yet
        self.attempts: int = fields.get("attempts", 0)
        self.epoch: int = fields.get("epoch", 0)
        self.retries: int = fields.get("retries", 0)
        self.timeout: float = fields.get("timeout", 0.0)
        self.backoff: float = fields.get("backoff", 1.0)
        self.run_at: float = fields.get("run_at", 0.0)
        self.submitted: float = fields.get("submitted", 0.0)
        self.started: float = fields.get("started", 0.0)
        self.finished: float = fields.get("finished", 0.0)
        self.worker: str = fields.get("worker", "")
        self.result: Any = fields.get("result")
        self.errors: list[str] = list(fields.get("errors", ()))
        self.every: float = fields.get("every", 0.0)
        self.cron: str = fields.get("cron", "")
        self.parent: str = fields.get("parent", "")
        self.fired: int = fields.get("fired", 0)
        self.skipped: int = fields.get("skipped", 0)
        self.lateness: float | None = fields.get("lateness")
        self.redelivered: bool = fields.get("redelivered", False)
        self.recorded: int = fields.get("recorded", 0)  # the attempt whose result was taken
        self.lost: int = fields.get("lost", 0)  # attempts lost (lease lapsed, worker gone)
        self.order: int = fields.get("order", 0)

    @property
    def periodic(self) -> bool:
        """Whether this task is a schedule (it makes a child at each firing)."""
        return bool(self.every or self.cron)

    def view(self) -> dict[str, Any]:
        """The task as clients see it (a msgpack map; ``order`` is internal)."""
        return {name: getattr(self, name) for name in _TASK_FIELDS if name != "order"}

    def pack(self) -> list[Any]:
        """The task as a snapshot holds it."""
        return [getattr(self, name) for name in _TASK_FIELDS]

    @classmethod
    def unpack(cls, row: list[Any]) -> Task:
        """The task ``pack`` made."""
        fields = dict(zip(_TASK_FIELDS, row))
        return cls(fields.pop("id"), fields.pop("type"), fields.pop("payload"), **fields)


class QueueState:
    """The queue's replicated state (see module docstring)."""

    def __init__(self, *, max_open: int = 1_000_000, max_keys: int = 10_000_000,
                 max_finished: int = 1_000_000, keep_s: float = 86_400.0,
                 max_lost: int = 5) -> None:
        self.max_open = max_open
        self.max_lost = max_lost
        self.max_keys = max_keys
        self.max_finished = max_finished
        self.keep_s = keep_s
        self.applied_index = 0
        self.tasks: dict[str, Task] = {}
        self.keys: dict[str, str] = {}  # key -> the first task submitted with it
        self.kept_keys = 0
        self.waiting: dict[tuple[str, str], deque[tuple[int, str]]] = {}
        """(type, version) -> (order, id) in the order tasks started waiting; an entry whose
        task left ``waiting`` (or waits again under a later order) is stale and skipped."""
        self.timers: list[tuple[float, str]] = []  # (run_at, id): scheduled and failed tasks
        self.finished: deque[str] = deque()  # finished ids, oldest first
        self.open = 0  # tasks not finished
        self.in_state: dict[str, int] = {}  # state -> how many tasks are in it
        self.order = 0  # the number the next task entering ``waiting`` gets
        self.counters: dict[str, int] = {
            "submitted": 0, "deduplicated": 0, "dispatched": 0, "completed": 0, "failed": 0,
            "dead": 0, "expired": 0, "fired": 0, "cancelled": 0, "retried": 0, "purged": 0,
            "zombie_results_refused": 0, "refused_full": 0, "malformed_commands": 0}
        self.results: dict[int, list[Any]] = {}
        """Each applied entry's command results, by index, until the leader's front takes
        them (``take_results``)."""
        self.changed: list[Task] = []
        """Tasks that finished, started waiting or started running in the entries applied since
        the front last looked (``take_changed``)."""
        self._digest: tuple[int, str] | None = None

    # ------------------------------------------------------------------ applying

    def apply_entry(self, index: int, data: bytes) -> list[Any]:
        """Apply the entry at ``index``; its commands' results."""
        if index <= self.applied_index:
            return []
        self.applied_index = index
        if not data or data[:1] == b"\x00":  # a no-op, or the Raft core's own
            return []
        try:
            now, commands = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
            now = float(now)
            if not isinstance(commands, list):
                raise TypeError("commands are not a list")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self.counters["malformed_commands"] += 1
            log.warning("entry %d does not decode: %r", index, exc)
            self.results[index] = []
            return []
        results = [self._apply(now, command) for command in commands]
        self.results[index] = results
        return results

    def _apply(self, now: float, command: Any) -> Any:
        try:
            code = command[0]
            if code == SUBMIT:
                return self._submit(now, str(command[1]), command[2])
            if code == DISPATCH:
                return self._dispatch(now, command[1], str(command[2]))
            if code == FINISH:
                return self._finish(now, command[1], int(command[2]), bool(command[3]),
                                    command[4], float(command[5]))
            if code == EXPIRE:
                return self._expire(now, command[1], int(command[2]), str(command[3]))
            if code == FIRE:
                return self._fire(now, command[1])
            if code == CANCEL:
                return self._cancel(now, command[1])
            if code == RETRY:
                return self._retry(now, command[1])
            if code == PURGE:
                return self._purge(now)
            raise ValueError(f"unknown command {code!r}")
        except (IndexError, KeyError, ValueError, TypeError, OverflowError, CronError) as exc:
            self.counters["malformed_commands"] += 1
            log.warning("a command does not decode: %r", exc)
            return "malformed"

    def _submit(self, now: float, task_id: str, spec: list[Any]) -> list[Any]:
        fields = dict(zip(SPEC_FIELDS, spec))
        key = fields["key"]
        if key is not None:
            first = self.keys.get(str(key))
            if first is not None:
                self.counters["deduplicated"] += 1
                return [first, False]
        if task_id in self.tasks:
            return [None, f"task id {task_id} is taken"]
        if self.open >= self.max_open:
            self.counters["refused_full"] += 1
            return [None, f"queue full: {self.open} tasks not finished"]
        if key is not None and fields["key_kept"] and self.kept_keys >= self.max_keys:
            self.counters["refused_full"] += 1
            return [None, f"queue full: {self.kept_keys} keys kept"]
        run_at = float(fields["run_at"] or 0.0)
        if fields["cron"]:  # CronError (malformed, or it never fires): for every replica alike
            run_at = Cron.parse(str(fields["cron"])).next_after(max(run_at, now) - 1e-6)
        elif fields["every"] and not run_at:
            run_at = now + float(fields["every"])
        task = Task(task_id, str(fields["type"]), fields["payload"],
                    version=str(fields["version"] or ""),
                    key=None if key is None else str(key), key_kept=bool(fields["key_kept"]),
                    retries=int(fields["retries"] or 0), timeout=float(fields["timeout"] or 0),
                    backoff=float(fields["backoff"] or 1.0), every=float(fields["every"] or 0),
                    cron=str(fields["cron"] or ""), submitted=now, run_at=run_at or now)
        if task.every and not math.isfinite(task.every) or task.every < 0:
            raise ValueError("every must be a positive number of seconds")
        self.tasks[task_id] = task
        self.open += 1
        if task.key is not None:
            self.keys[task.key] = task_id
            self.kept_keys += task.key_kept
        self.counters["submitted"] += 1
        if task.periodic or run_at > now:
            self._schedule(task, "scheduled", task.run_at)
        else:
            self._make_waiting(task)
        return [task_id, True]

    def _dispatch(self, now: float, task_id: str, worker: str) -> int:
        task = self.tasks.get(task_id)
        if task is None or task.state != "waiting":
            return 0
        self._move(task, "running")
        self._drop_head((task.type, task.version))
        task.attempts += 1
        task.epoch += 1
        task.worker = worker
        task.started = now
        self.counters["dispatched"] += 1
        self.changed.append(task)
        return task.epoch

    def _current(self, task_id: str, epoch: int) -> Task | str:
        task = self.tasks.get(task_id)
        if task is None:
            return f"no task {task_id}"
        if task.state != "running" or task.epoch != epoch:
            return (f"attempt {epoch} of {task_id} is not current (the task is {task.state}, "
                    f"attempt {task.epoch})")
        return task

    def _finish(self, now: float, task_id: str, epoch: int, ok: bool, value: Any,
                retry_at: float) -> str:
        task = self._current(task_id, epoch)
        if isinstance(task, str):
            known = self.tasks.get(task_id)
            if known is not None and epoch and known.recorded == epoch:  # sent again
                return ""
            self.counters["zombie_results_refused"] += 1
            return task
        task.worker = ""
        task.recorded = epoch
        if ok:
            task.result = value
            self._end(now, task, "done")
            self.counters["completed"] += 1
            return ""
        self._record_error(task, str(value))
        self.counters["failed"] += 1
        if task.attempts - task.lost > task.retries:
            self._end(now, task, "dead")
            self.counters["dead"] += 1
        elif retry_at > now:
            self._schedule(task, "failed", retry_at)
        else:
            self._make_waiting(task)
        return ""

    def _expire(self, now: float, task_id: str, epoch: int, reason: str) -> str:
        task = self._current(task_id, epoch)
        if isinstance(task, str):
            return task
        self.counters["expired"] += 1
        self._record_error(task, f"attempt {epoch} lost: {reason}")
        task.worker = ""
        task.redelivered = True
        task.lost += 1
        if task.lost >= self.max_lost:
            self._end(now, task, "dead")
            self.counters["dead"] += 1
        else:
            self._make_waiting(task)
        return ""

    def _fire(self, now: float, task_id: str) -> str:
        task = self.tasks.get(task_id)
        if task is None or task.state not in ("scheduled", "failed") or task.run_at > now:
            return "not due"
        self.counters["fired"] += 1
        if not task.periodic:
            if task.state == "scheduled":  # a retry's back-off is not a delay asked for
                task.lateness = now - task.run_at
            self._make_waiting(task)
            return ""
        slot = task.run_at
        next_at, skipped = self._next_firing(task, now)
        task.skipped += skipped
        self._schedule(task, "scheduled", next_at)
        if self.open >= self.max_open:
            task.skipped += 1
            self.counters["refused_full"] += 1
            return "queue full"
        task.fired += 1
        child = Task(f"{task.id}@{task.fired}", task.type, task.payload, version=task.version,
                     retries=task.retries, timeout=task.timeout, backoff=task.backoff,
                     parent=task.id, submitted=now, run_at=slot, lateness=now - slot)
        self.tasks[child.id] = child
        self.open += 1
        self._make_waiting(child)
        return ""

    @staticmethod
    def _next_firing(task: Task, now: float) -> tuple[float, int]:
        """A schedule's next time strictly after ``now``, and the periods it skips."""
        if task.every:
            periods = math.floor((now - task.run_at) / task.every) + 1
            while task.run_at + periods * task.every <= now:  # a float step short of a slot
                periods += 1
            return task.run_at + periods * task.every, max(0, periods - 1)
        cron = Cron.parse(task.cron)
        at, skipped = cron.next_after(task.run_at), 0
        while at <= now and skipped < 10_000:
            at, skipped = cron.next_after(at), skipped + 1
        return (at if at > now else cron.next_after(now)), skipped

    def _cancel(self, now: float, task_id: str) -> str:
        task = self.tasks.get(task_id)
        if task is None:
            return f"no task {task_id}"
        if task.state in FINISHED:
            return f"task {task_id} is {task.state} already"
        task.worker = ""
        self._end(now, task, "cancelled")
        self.counters["cancelled"] += 1
        return ""

    def _retry(self, now: float, task_id: str) -> str:
        task = self.tasks.get(task_id)
        if task is None:
            return f"no task {task_id}"
        if task.state not in ("dead", "cancelled") or task.periodic and task.state == "dead":
            return f"task {task_id} is {task.state}: only a dead or cancelled task is retried"
        if self.open >= self.max_open:
            return f"queue full: {self.open} tasks not finished"
        self.finished.remove(task_id)  # O(n), rare: an operator's command
        self.open += 1
        task.attempts = task.lost = 0
        task.finished = 0.0
        self.counters["retried"] += 1
        if task.periodic:
            next_at, _ = self._next_firing(task, now)
            self._schedule(task, "scheduled", next_at)
        else:
            self._make_waiting(task)
        return ""

    def _compact(self) -> None:
        """Drop stale timers and queue entries when they outnumber live ones (derived state,
        rebuilt alike on every replica)."""
        tasks = self.tasks
        timed = self.in_state.get("scheduled", 0) + self.in_state.get("failed", 0)
        if len(self.timers) > 2 * timed + 1024:
            self.timers = [t for t in self.timers if not self._stale(*t)]
            heapq.heapify(self.timers)
        waiting = self.in_state.get("waiting", 0)
        if sum(len(q) for q in self.waiting.values()) > 2 * waiting + 1024:
            for queue, ids in list(self.waiting.items()):
                kept = deque(e for e in ids if (t := tasks.get(e[1])) is not None
                             and t.state == "waiting" and t.order == e[0])
                if kept:
                    self.waiting[queue] = kept
                else:
                    del self.waiting[queue]

    def _purge(self, now: float) -> int:
        self._compact()
        finished, tasks, purged = self.finished, self.tasks, 0
        while finished:
            task = tasks[finished[0]]
            if task.finished >= now - self.keep_s and len(finished) <= self.max_finished:
                break
            finished.popleft()
            del tasks[task.id]
            self.in_state[task.state] -= 1
            if task.key is not None and not task.key_kept:
                self.keys.pop(task.key, None)
            purged += 1
        self.counters["purged"] += purged
        return purged

    # ------------------------------------------------------------------ transitions

    def _make_waiting(self, task: Task) -> None:
        self._move(task, "waiting")
        task.order = self.order
        self.order += 1
        self.waiting.setdefault((task.type, task.version), deque()).append((task.order, task.id))
        self.changed.append(task)

    def _drop_head(self, queue: tuple[str, str]) -> None:
        """Drop the ids at the front of ``queue`` that are not waiting any more (tasks mostly
        leave in order, so the queues stay short on every replica)."""
        ids, tasks = self.waiting.get(queue), self.tasks
        while ids:
            order, task_id = ids[0]
            task = tasks.get(task_id)
            if task is not None and task.state == "waiting" and task.order == order:
                return
            ids.popleft()

    def _schedule(self, task: Task, state: str, run_at: float) -> None:
        self._move(task, state)
        task.run_at = run_at
        heapq.heappush(self.timers, (run_at, task.id))

    def _move(self, task: Task, state: str) -> None:
        in_state = self.in_state
        if task.state:
            in_state[task.state] -= 1
        in_state[state] = in_state.get(state, 0) + 1
        task.state = state

    def _end(self, now: float, task: Task, state: str) -> None:
        self._move(task, state)
        task.finished = now
        self.open -= 1
        self.finished.append(task.id)
        self.changed.append(task)

    @staticmethod
    def _record_error(task: Task, error: str) -> None:
        task.errors.append(error[:2000])
        del task.errors[:-MAX_ERRORS]

    # ------------------------------------------------------------------ what the leader asks

    def waiting_ids(self, queue: tuple[str, str]) -> Iterator[str]:
        """The waiting tasks of ``queue`` (type, version), oldest first."""
        tasks = self.tasks
        for order, task_id in self.waiting.get(queue, ()):
            task = tasks.get(task_id)
            if task is not None and task.state == "waiting" and task.order == order:
                yield task_id

    def due(self, now: float, skip: set[str], limit: int = 1024) -> list[str]:
        """Tasks whose time came (at ``now``), not in ``skip``, at most ``limit``. Reads the
        timers without taking them (a FIRE applied makes its timer stale; stale timers are
        dropped when they reach the top)."""
        timers = self.timers
        while timers and self._stale(*timers[0]):
            heapq.heappop(timers)
        out: dict[str, None] = {}
        stack = [0]
        while stack and len(out) < limit:  # the heap's due part: a node due, its children may be
            i = stack.pop()
            if i >= len(timers) or timers[i][0] > now:
                continue
            run_at, task_id = timers[i]
            if task_id not in skip and not self._stale(run_at, task_id):
                out[task_id] = None
            stack += (2 * i + 1, 2 * i + 2)
        return list(out)

    def _stale(self, run_at: float, task_id: str) -> bool:
        task = self.tasks.get(task_id)
        return task is None or task.state not in ("scheduled", "failed") or task.run_at != run_at

    def next_timer(self) -> float | None:
        """When the earliest timer is due (None: no timer)."""
        return self.timers[0][0] if self.timers else None

    def running(self) -> list[Task]:
        """The tasks running now."""
        return [task for task in self.tasks.values() if task.state == "running"]

    def take_results(self) -> dict[int, list[Any]]:
        """The results of the entries applied since the last call."""
        results, self.results = self.results, {}
        return results

    def take_changed(self) -> list[Task]:
        """Tasks that finished, started waiting or started running since the last call."""
        changed, self.changed = self.changed, []
        return changed

    def counts(self) -> dict[str, int]:
        """How many tasks are in each state."""
        return {state: n for state, n in self.in_state.items() if n}

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state (``restore`` takes it)."""
        return msgpack.packb(self._fields(), use_bin_type=True)

    def _fields(self) -> dict[str, Any]:
        return {"v": SNAPSHOT_VERSION, "applied": self.applied_index,
                "tasks": [task.pack() for task in self.tasks.values()],
                "keys": self.keys, "kept_keys": self.kept_keys,
                "finished": list(self.finished), "order": self.order,
                "counters": self.counters}

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's; the queues and timers are rebuilt from the
        tasks (waiting in the order they started waiting)."""
        got = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
        if got.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"task-queue snapshot version {got.get('v')!r} is not known here")
        self.applied_index = int(got["applied"])
        self.tasks = {row[0]: Task.unpack(row) for row in got["tasks"]}
        self.keys = dict(got["keys"])
        self.kept_keys = int(got["kept_keys"])
        self.finished = deque(got["finished"])
        self.order = int(got["order"])
        self.counters.update(got["counters"])
        self.open = sum(1 for task in self.tasks.values() if task.state not in FINISHED)
        self.in_state = {}
        for task in self.tasks.values():
            self.in_state[task.state] = self.in_state.get(task.state, 0) + 1
        self.waiting, self.timers = {}, []
        for task in sorted(self.tasks.values(), key=lambda t: t.order):
            if task.state == "waiting":
                self.waiting.setdefault((task.type, task.version), deque()).append(
                    (task.order, task.id))
            elif task.state in ("scheduled", "failed"):
                self.timers.append((task.run_at, task.id))
        heapq.heapify(self.timers)
        self.results, self.changed, self._digest = {}, [], None

    def state_digest(self) -> str:
        """A digest of the replicated state (equal on replicas that applied the same log)."""
        if self._digest is not None and self._digest[0] == self.applied_index:
            return self._digest[1]
        fields = self._fields()
        fields["tasks"].sort()
        digest = hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).hexdigest()[:16]
        self._digest = (self.applied_index, digest)
        return digest
