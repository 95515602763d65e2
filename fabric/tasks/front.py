"""The queue's front: what a queue replica does with its ROUTER socket, and what its leader does
with the leadership (the ``LeaderWork`` of a queue replica).

Every replica answers on its socket; one that does not lead (or leads a group without a
majority of its size as voters yet) answers ``redirect`` with the leader's address. The leader:

* turns requests into commands (``fabric.tasks.state``), gathered over one turn of the loop into
  one log entry, and answers each request once its entry is applied (``submitted``, ``ok``,
  ``recorded``...); an entry that another leader's replaced is answered ``redirect`` (the
  client sends it again: a submit carries a key, so it is never made twice);
* dispatches (``Dispatcher``): waiting tasks to workers with free slots, each dispatch a
  DISPATCH command, sent to the worker once applied (its attempt's epoch is then durable);
* keeps each running attempt's lease (``Leases``): a worker's heartbeat extends its attempts;
  one that lapses, or whose worker left the name service, is proposed EXPIREd;
* fires timers: scheduled tasks and retries whose time came (FIRE), and purges (PURGE);
* answers ``wait`` when a task finishes (or at the wait's timeout).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
import zmq.asyncio

from fabric.errors import DecodeError
from fabric.stateful.group import GroupMember
from fabric.tasks import protocol as p
from fabric.tasks.dispatch import Dispatcher, Leases
from fabric.tasks.state import (
    CANCEL,
    EXPIRE,
    FINISH,
    FINISHED,
    FIRE,
    PURGE,
    RETRY,
    SUBMIT,
    QueueState,
    encode_entry,
)
from nameservice.raft.types import Entry

log = logging.getLogger(__name__)

__all__ = ["QueueFront"]

MAX_COMMANDS = 4096
"""The most commands in one log entry."""
TICK_S = 0.02
"""How often the leader looks at its timers, leases and waits at most."""
PURGE_EVERY_S = 60.0
MAX_WAITS = 100_000
"""The most ``wait`` requests held at once (beyond: answered at once with the task as it is)."""
MAX_WAIT_S = 30.0
MAX_LIST = 10_000
SNDHWM = 100_000

Done = Callable[[list[Any] | None], None]  # a request's results, or None: not applied here


class QueueFront:
    """A queue replica's socket and its leader's work (see module docstring)."""

    def __init__(self, member: GroupMember, state: QueueState, sock: zmq.asyncio.Socket, *,
                 leader_address: Callable[[], str], live_workers: Callable[[], set[str]],
                 lease_s: float = 10.0) -> None:
        self.member = member
        self.state = state
        self.sock = sock
        self._sync: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)  # drains, sends
        self._leader_address = leader_address
        self.leading = False
        self.lease_s = lease_s
        self.dispatcher = Dispatcher(state, live_workers, lease_s)
        self.leases = Leases(lease_s)
        self._commands: list[list[Any]] = []
        self._done: list[tuple[int, int, Done]] = []  # (first, end, done) over _commands
        self._pending: dict[int, tuple[int, list[tuple[int, int, Done]]]] = {}
        self._flush_scheduled = False
        self._next_id = 0
        self._firing: set[str] = set()
        self._waits: dict[str, list[tuple[bytes, int, float]]] = {}
        self._wait_count = 0
        self._last_purge = 0.0
        self._tasks: list[asyncio.Task] = []
        self._check_scheduled = False
        self._runs: dict[str, list[list[Any]]] = {}  # worker id -> runs to send it
        self._lead_task: asyncio.Task | None = None
        self._closed = False
        self.counters = {"bad_frames": 0, "requests": 0, "redirected": 0, "replies_dropped": 0,
                         "entries_proposed": 0, "lateness_ms_max": 0}

    def start(self) -> None:
        """Answer on the socket (every replica)."""
        self._tasks.append(asyncio.ensure_future(self._receive()))

    # ------------------------------------------------------------------ LeaderWork

    def on_role(self, is_leader: bool, quorum: bool) -> None:
        """Lead (start dispatching and firing) or stop at once."""
        leading = is_leader and quorum and not self._closed
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            self._next_id = 0
            self.dispatcher.reset()
            self.leases.reset(self.state.running(), time.monotonic())
            self._lead_task = asyncio.ensure_future(self._lead())
            log.info("leading the queue (term %d)", self.member.core.term)
            return
        if self._lead_task is not None:
            self._lead_task.cancel()
            self._lead_task = None
        pending, self._pending = self._pending, {}
        for _, callbacks in pending.values():
            for _, _, done in callbacks:
                done(None)
        self._commands, self._done, self._runs = [], [], {}
        for task_id in list(self._waits):
            for ident, rid, _ in self._waits.pop(task_id):
                self._send(ident, p.REDIRECT, rid, self._leader_address())
        self._wait_count = 0
        self._firing.clear()
        self.dispatcher.reset()
        self.leases.reset([], 0.0)

    def on_applied(self, entries: Sequence[Entry]) -> None:
        """Answer the requests whose entries were applied; tell waiters; dispatch."""
        results = self.state.take_results()
        changed = self.state.take_changed()
        if not self.leading:
            return
        for entry in entries:
            mine = self._pending.pop(entry.index, None)
            if mine is None:
                continue
            term, callbacks = mine
            got = results.get(entry.index) if term == entry.term else None
            for first, end, done in callbacks:
                done(None if got is None else got[first:end])
        runs, self._runs = self._runs, {}
        for worker_id, rows in runs.items():  # a frame per worker for what this turn dispatched
            seat = self.dispatcher.workers.get(worker_id)  # its socket now (it may reconnect)
            if seat is None:
                continue
            frame = p.encode(p.RUN, 0, rows)
            if len(frame) <= p.MAX_FRAME // 2:
                self._send_frame(seat.ident, frame)
            else:
                for chunk in p.cut_by_size(rows):
                    self._send(seat.ident, p.RUN, 0, chunk)
        now = time.monotonic()
        for task in changed:
            if task.state == "running":  # dispatched by this leader, or one before it
                self.leases.adopt(task.id, task.epoch, task.worker, now)
            elif task.state in FINISHED and task.id in self._waits:
                view = task.view()
                for ident, rid, _ in self._waits.pop(task.id):
                    self._wait_count -= 1
                    self._send(ident, p.TASK, rid, view)
        self._flush_soon()

    async def drain(self, timeout: float) -> int:
        """Wait (at most ``timeout``) until what this leader proposed is applied; the number
        of entries left."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return len(self._pending)

    async def close(self) -> None:
        """Stop answering."""
        self.on_role(False, False)
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """Leading or not, the workers, leases, waits and counters."""
        return {"leading": self.leading, "workers": self.dispatcher.status(),
                "leases": len(self.leases), "waits": self._wait_count,
                "pending_entries": len(self._pending), **self.counters}

    # ------------------------------------------------------------------ the socket

    async def _receive(self) -> None:
        sock = self.sock
        while True:
            self._on_frames(await sock.recv_multipart(copy=True))
            self._drain_input()

    def _drain_input(self) -> None:
        """Take what is queued on the socket now (at most 1,000 frames; more: again soon)."""
        for _ in range(1000):
            try:
                frames = self._sync.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_frames(frames)
        else:
            self._check_input_soon()
        if self._commands:
            self._flush_soon()

    def _check_input_soon(self) -> None:
        if not self._check_scheduled and not self._closed:
            self._check_scheduled = True
            asyncio.get_running_loop().call_soon(self._check_input)

    def _check_input(self) -> None:
        # A send on the shadow socket can take the edge that would wake the receiver: look.
        self._check_scheduled = False
        if not self._closed and int(self._sync.get(zmq.EVENTS)) & zmq.POLLIN:
            self._drain_input()

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 2:
                raise DecodeError(f"{len(frames) - 1} frames, expected 1")
            ident, items = frames[0], p.decode(frames[1])
            if len(items) < 2 or not isinstance(items[1], int) or isinstance(items[1], bool):
                raise DecodeError("no request id")
        except DecodeError as exc:
            self._bad(exc)
            return
        self.counters["requests"] += 1
        name, rid = items[0], items[1]
        if not self.leading:
            self.counters["redirected"] += 1
            self._send(ident, p.REDIRECT, rid, self._leader_address())
            return
        handler = self._handlers.get(name)
        try:
            if handler is None:
                raise DecodeError(f"unknown request {name!r}")
            handler(self, ident, rid, items[2:])
        except (DecodeError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            self._send(ident, p.ERROR, rid, f"malformed {name!r}: {exc}")
            self._bad(exc)

    def _bad(self, exc: Exception) -> None:
        self.counters["bad_frames"] += 1
        if self.counters["bad_frames"] <= 10:
            log.warning("dropped a bad request: %s", exc)

    def _send(self, ident: bytes, *items: Any) -> None:
        self._send_frame(ident, p.encode(*items))

    def _send_frame(self, ident: bytes, frame: bytes) -> None:
        try:
            self._sync.send_multipart([ident, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # the peer's queue is full, or it is gone: it asks again
            self.counters["replies_dropped"] += 1
        self._check_input_soon()

    # ------------------------------------------------------------------ client requests

    def _submit(self, ident: bytes, rid: int, args: list[Any]) -> None:
        specs = args[0] if args and isinstance(args[0], list) else None
        if not specs or len(specs) > p.MAX_BATCH:
            raise DecodeError(f"a submit carries 1..{p.MAX_BATCH} tasks")
        checked = [p.spec_from_map(spec) for spec in specs]
        now = time.time()
        first = len(self._commands)
        for spec in checked:
            task_id = self._new_id()
            key, kept = (f"k:{spec.key}", True) if spec.key is not None else \
                (f"o:{spec.once}", False) if spec.once is not None else (None, False)
            run_at = spec.run_at if spec.run_at is not None else \
                now + spec.delay if spec.delay is not None else 0.0
            self._commands.append([SUBMIT, task_id, [
                spec.type, spec.payload, key, kept, run_at, spec.every or 0.0, spec.cron or "",
                spec.retries, spec.timeout, spec.version, spec.backoff]])
            if run_at <= now and not spec.every and not spec.cron:
                self.dispatcher.fresh(task_id, (spec.type, spec.version))

        def done(results: list[Any] | None) -> None:
            if results is None:
                self._send(ident, p.REDIRECT, rid, self._leader_address())
            else:
                self._send(ident, p.SUBMITTED, rid, results)
        self._done.append((first, len(self._commands), done))

    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self.member.core.term}.{self._next_id}"

    def _answer(self, ident: bytes, rid: int, results: list[Any] | None) -> None:
        if results is None:
            self._send(ident, p.REDIRECT, rid, self._leader_address())
        elif results[0]:
            self._send(ident, p.ERROR, rid, str(results[0]))
        else:
            self._send(ident, p.OK, rid, "")

    def _get(self, ident: bytes, rid: int, args: list[Any]) -> None:
        task = self.state.tasks.get(args[0]) if args and isinstance(args[0], str) else None
        self._send(ident, p.TASK, rid, task.view() if task is not None else None)

    def _list(self, ident: bytes, rid: int, args: list[Any]) -> None:
        query = args[0] if args and isinstance(args[0], dict) else {}
        state, kind = query.get("state"), query.get("type")
        limit = query.get("limit") or 100
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DecodeError("limit must be a positive integer")
        limit = min(limit, MAX_LIST)
        out = []
        for task in self.state.tasks.values():
            if (state is None or task.state == state) and (kind is None or task.type == kind):
                out.append(task.view())
                if len(out) >= limit:
                    break
        self._send(ident, p.TASKS, rid, out)

    def _wait(self, ident: bytes, rid: int, args: list[Any]) -> None:
        if not args or not isinstance(args[0], str):
            raise DecodeError("expected a task id")
        task = self.state.tasks.get(args[0])
        timeout = args[1] if len(args) > 1 and isinstance(args[1], (int, float)) \
            and math.isfinite(args[1]) else 1.0
        if task is None or task.state in FINISHED or self._wait_count >= MAX_WAITS:
            self._send(ident, p.TASK, rid, task.view() if task is not None else None)
            return
        deadline = time.monotonic() + min(max(float(timeout), 0.0), MAX_WAIT_S)
        self._waits.setdefault(task.id, []).append((ident, rid, deadline))
        self._wait_count += 1

    def _stats(self, ident: bytes, rid: int, args: list[Any]) -> None:
        state = self.state
        self._send(ident, p.STATS, rid, {"counts": state.counts(), "counters": state.counters,
                                         "applied_index": state.applied_index,
                                         "front": self.status()})

    # ------------------------------------------------------------------ worker requests

    def _hello(self, ident: bytes, rid: int, args: list[Any]) -> None:
        info = args[0] if args and isinstance(args[0], dict) else None
        if info is None:
            raise DecodeError("hello carries a map")
        worker = self.dispatcher.hello(ident, info)
        lost = []
        for task_id, epoch in worker.reported:
            if self.leases.extend(task_id, epoch, worker.id, time.monotonic()):
                worker.inflight.add(task_id)
            else:
                lost.append([task_id, epoch])
        self._send(ident, p.WELCOME, rid, {"lease_s": self.lease_s, "lost": lost})
        self._flush_soon()

    def _beat(self, ident: bytes, rid: int, args: list[Any]) -> None:
        worker = self.dispatcher.by_ident(ident)
        if worker is None:
            self._send(ident, p.BEATEN, rid, None)  # say hello (again) first
            return
        attempts = args[0] if args and isinstance(args[0], list) else []
        if len(attempts) > p.MAX_BATCH or not all(
                isinstance(a, list) and len(a) == 2 and isinstance(a[0], str)
                and isinstance(a[1], int) for a in attempts):
            raise DecodeError(f"a beat lists at most {p.MAX_BATCH} [task id, epoch] pairs")
        now = time.monotonic()
        lost = [[task_id, epoch] for task_id, epoch in attempts
                if not self.leases.extend(task_id, epoch, worker.id, now)]
        self._send(ident, p.BEATEN, rid, lost)
        self._flush_soon()  # a worker heard again may take what waits

    def _result(self, ident: bytes, rid: int, args: list[Any]) -> None:
        reports = args[0] if args and isinstance(args[0], list) else None
        if not reports or len(reports) > p.MAX_BATCH:
            raise DecodeError(f"a result carries 1..{p.MAX_BATCH} reports")
        for report in reports:
            if not isinstance(report, list) or len(report) != 4 \
                    or not isinstance(report[0], str) or not isinstance(report[1], int) \
                    or isinstance(report[1], bool):
                raise DecodeError("a report is [task id, epoch, ok, value]")
        worker = self.dispatcher.by_ident(ident)
        first = len(self._commands)
        ids = []
        for report in reports:
            task_id, epoch, ok, value = report
            if len(p.encode(value)) > p.MAX_PAYLOAD:
                ok, value = False, f"the result is over {p.MAX_PAYLOAD} bytes"
            ids.append((task_id, epoch))
            if worker is not None:  # its slot is free now: the next dispatch rides this entry
                worker.inflight.discard(task_id)
            retry_at = 0.0
            task = self.state.tasks.get(task_id)
            if not ok and task is not None:
                retry_at = time.time() + self.dispatcher.backoff(task)
            self._commands.append([FINISH, task_id, epoch, bool(ok), value, retry_at])

        def done(results: list[Any] | None) -> None:
            if results is None:
                self._send(ident, p.REDIRECT, rid, self._leader_address())
                return
            for (task_id, epoch), reason in zip(ids, results):
                if reason:
                    log.warning("refused a result: %s", reason)
                else:  # its slot is free on whichever seat the worker has now
                    self.dispatcher.release(self.leases.drop(task_id, epoch), task_id)
            self._send(ident, p.RECORDED, rid, results)
        self._done.append((first, len(self._commands), done))

    def _cancel(self, ident: bytes, rid: int, args: list[Any]) -> None:
        self._by_id(CANCEL, ident, rid, args)

    def _retry(self, ident: bytes, rid: int, args: list[Any]) -> None:
        self._by_id(RETRY, ident, rid, args)

    def _by_id(self, code: int, ident: bytes, rid: int, args: list[Any]) -> None:
        if not args or not isinstance(args[0], str):
            raise DecodeError("expected a task id")
        self._propose([code, args[0]], lambda results: self._answer(ident, rid, results))

    _handlers: dict[str, Callable[[QueueFront, bytes, int, list[Any]], None]] = {
        p.SUBMIT: _submit, p.GET: _get, p.LIST: _list, p.WAIT: _wait, p.STATS: _stats,
        p.CANCEL: _cancel, p.RETRY: _retry, p.HELLO: _hello, p.BEAT: _beat, p.RESULT: _result,
    }

    # ------------------------------------------------------------------ proposing

    def _propose(self, command: list[Any], done: Done) -> None:
        self._done.append((len(self._commands), len(self._commands) + 1, done))
        self._commands.append(command)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_scheduled and self.leading:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.leading:
            return
        for worker, task_id in self.dispatcher.assign():
            self._propose_dispatch(worker, task_id)
        commands, callbacks = self._commands, self._done
        self._commands, self._done = [], []
        now = time.time()
        start = 0
        while start < len(commands):
            end = min(len(commands), start + MAX_COMMANDS)
            while any(first < end < last for first, last, _ in callbacks):
                end += 1  # a request's commands stay in one entry
            mine = [(first - start, last - start, done) for first, last, done in callbacks
                    if start <= first < end]
            try:
                data = encode_entry(now, commands[start:end])
            except (ValueError, TypeError, OverflowError) as exc:  # checked on arrival: a bug
                log.error("an entry of %d commands does not encode: %r", end - start, exc)
                data = None
            placed = self.member.propose(data) if data is not None else None
            if placed is None:
                for _, _, done in mine:
                    done(None)
            else:
                term, index = placed
                self._pending[index] = (term, mine)
                self.counters["entries_proposed"] += 1
            start = end
        if commands:
            self.member.after_input()

    def _propose_dispatch(self, worker: Any, task_id: str) -> None:
        def done(results: list[Any] | None) -> None:
            self.dispatcher.settled(task_id)
            epoch = results[0] if results else 0
            if not epoch or not self.leading:
                self.dispatcher.release(worker.id, task_id)
                return
            task = self.state.tasks[task_id]
            self.leases.start(task_id, epoch, worker.id, time.monotonic())
            runs = self._runs.get(worker.id)
            if runs is None:
                runs = self._runs[worker.id] = []
            runs.append([task_id, epoch, task.type, task.payload, task.timeout,
                         task.attempts, task.redelivered, task.version])
        self._done.append((len(self._commands), len(self._commands) + 1, done))
        self._commands.append(self.dispatcher.command(task_id, worker))

    # ------------------------------------------------------------------ time

    async def _lead(self) -> None:
        while True:
            now = time.time()
            due = self.state.due(now, self._firing)
            for task_id in due:
                self._firing.add(task_id)
                self._propose([FIRE, task_id], self._when_fired(task_id))
            mono = time.monotonic()
            lost = self.dispatcher.lost_workers()
            for task_id, epoch, reason in self.leases.lapsed(mono, lost):
                self._propose([EXPIRE, task_id, epoch, reason], self._when_expired(task_id))
            if now - self._last_purge >= PURGE_EVERY_S:
                self._last_purge = now
                self._propose([PURGE], lambda results: None)
            self._time_out_waits(mono)
            self._flush_soon()  # workers that became live may take what waits
            next_at = self.state.next_timer()
            pause = TICK_S if next_at is None else min(TICK_S, max(0.0, next_at - time.time()))
            await asyncio.sleep(pause)

    def _when_fired(self, task_id: str) -> Done:
        def done(results: list[Any] | None) -> None:
            self._firing.discard(task_id)
            task = self.state.tasks.get(task_id)
            if results and task is not None and task.lateness is not None:
                late_ms = int(task.lateness * 1000)
                self.counters["lateness_ms_max"] = max(self.counters["lateness_ms_max"],
                                                       late_ms)
        return done

    def _when_expired(self, task_id: str) -> Done:
        def done(results: list[Any] | None) -> None:
            if results is None:  # not proposed, or replaced: proposed again if still lapsed
                self.leases.expire_again(task_id)
                return
            worker_id = self.leases.drop(task_id)
            self.dispatcher.release(worker_id, task_id)
        return done

    def _time_out_waits(self, now: float) -> None:
        for task_id in [i for i, waits in self._waits.items()
                        if any(deadline <= now for _, _, deadline in waits)]:
            waits = self._waits.pop(task_id)
            task = self.state.tasks.get(task_id)
            view = task.view() if task is not None else None
            keep = []
            for ident, rid, deadline in waits:
                if deadline <= now:
                    self._wait_count -= 1
                    self._send(ident, p.TASK, rid, view)
                else:
                    keep.append((ident, rid, deadline))
            if keep:
                self._waits[task_id] = keep

