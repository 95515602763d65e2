"""Workers: functions registered for task types, run when the queue dispatches to them.

    from fabric.tasks import task

    @task("resize", version="2")
    async def resize(payload, attempt):        # or def ...: run in a thread
        write_thumbnail(payload, fence=attempt.token)   # (task id, epoch)
        return "ok"

``fabric worker run MODULE`` (or ``Worker(names, "jobs", handlers=collect(module))``) serves
the module's tasks. A worker registers its types and versions in the name service under a
lease (``queue/<name>/workers``), says hello to the queue's leader with its capacity (the
attempts it runs at once: the leader sends no more), sends a heartbeat every third of its
lease with the attempts it runs, and reports each attempt's result or error, keeping it until
the queue says it is recorded (so a leader's failover loses no result).

A handler's ``attempt`` (``Attempt``) carries the fencing token ``(task id, epoch)``: a
system the handler writes to can refuse a write with an older token than one it has seen, and
the queue refuses a result from an attempt that is not current (its lease lapsed, its worker
was taken for lost). A handler with a timeout that runs longer fails with "timeout" (a thread
cannot be stopped: a synchronous handler that overruns goes on in the background).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import msgpack

from fabric.errors import ConfigError, Unavailable
from fabric.tasks import protocol as p
from fabric.tasks.link import QueueLink
from nameservice.names import Names

log = logging.getLogger(__name__)

__all__ = ["Attempt", "Worker", "collect", "task"]

MARK = "__fabric_task__"


def task(type: str, *, version: str = "") -> Callable[[Callable], Callable]:
    """Register the decorated function as the handler of tasks of ``type`` (``version``: what
    this code is, for tasks that ask for one)."""
    if not isinstance(type, str) or not type:
        raise ConfigError("a task type is a non-empty string")

    def mark(fn: Callable) -> Callable:
        setattr(fn, MARK, (type, version))
        return fn
    return mark


def collect(module: ModuleType, types: set[str] | None = None
            ) -> dict[str, tuple[Callable, str]]:
    """The handlers ``@task`` registered in ``module`` (only ``types``, if given): type ->
    (function, version); ConfigError if a type has two."""
    found: dict[str, tuple[Callable, str]] = {}
    for value in vars(module).values():
        mark = getattr(value, MARK, None)
        if not callable(value) or not isinstance(mark, tuple):
            continue
        kind, version = mark
        if types is not None and kind not in types:
            continue
        if kind in found:
            raise ConfigError(f"two handlers of task type {kind!r} in {module.__name__}")
        found[kind] = (value, version)
    if types is not None and types - found.keys():
        raise ConfigError(f"{module.__name__} has no handler of "
                          f"{', '.join(sorted(types - found.keys()))}")
    return found


@dataclass(frozen=True)
class Attempt:
    """One attempt at a task, as its handler sees it."""

    id: str
    epoch: int
    type: str
    attempt: int
    redelivered: bool
    timeout: float

    @property
    def token(self) -> tuple[str, int]:
        """The fencing token: pass it to what the handler writes to."""
        return (self.id, self.epoch)


class Worker:
    """A worker of the queue ``queue`` (see module docstring)."""

    def __init__(self, names: Names | None, queue: str = "tasks", *,
                 handlers: dict[str, tuple[Callable, str]] | None = None, capacity: int = 1,
                 worker_id: str | None = None, addresses: list[str] | None = None) -> None:
        if capacity < 1:
            raise ConfigError("a worker's capacity is at least 1")
        self.names = names
        self.queue = queue
        self.handlers: dict[str, tuple[Callable, str]] = dict(handlers or {})
        self.capacity = capacity
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.link = QueueLink(names, queue, addresses=addresses, on_push=self._on_run)
        self.link.on_moved = self._on_moved
        self.lease_s = 10.0
        self.running: dict[str, tuple[int, asyncio.Task]] = {}  # id -> (epoch, its run)
        self._reports: dict[tuple[str, int], list[Any]] = {}  # results not recorded yet
        self._report_wake = asyncio.Event()
        self._hello_due = asyncio.Event()
        self._draining = False
        self._shapes: dict[Callable, tuple[bool, bool]] = {}  # fn -> (takes two, is async)
        self._threads = ThreadPoolExecutor(max_workers=capacity,
                                           thread_name_prefix=f"task-{self.id}")
        self._stopped = False  # the loops end (a cancel that wait_for swallowed included)
        self.counters = {"started": 0, "succeeded": 0, "failed": 0, "refused": 0,
                         "lost": 0, "timeouts": 0}

    def task(self, type: str, *, version: str = "") -> Callable[[Callable], Callable]:
        """Register the decorated function as this worker's handler of ``type``."""
        def register(fn: Callable) -> Callable:
            self.handlers[type] = (fn, version)
            return fn
        return register

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 30.0) -> None:
        """Serve until ``stop`` is set; then take no more, finish what runs (at most
        ``drain_timeout``), report it, and deregister."""
        if not self.handlers:
            raise ConfigError("this worker has no task handlers")
        registration = None
        if self.names is not None:
            registration = await self.names.register(
                p.workers_name(self.queue), f"worker:{self.id}",
                {"worker": self.id, "capacity": self.capacity,
                 "types": {t: v for t, (_, v) in self.handlers.items()}})
        loops = [asyncio.ensure_future(self._keep_hello()),
                 asyncio.ensure_future(self._report_loop())]
        try:
            await stop.wait()
            self._draining = True
            self._hello_due.set()  # the leader learns it sends nothing more here
            deadline = time.monotonic() + drain_timeout
            while (self.running or self._reports) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            self._stopped = True
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for _, run in self.running.values():
                run.cancel()
            self._threads.shutdown(wait=False)
            if registration is not None:
                try:
                    await registration.close()
                except Exception as exc:  # the lease expires by itself
                    log.warning("could not deregister: %s", exc)
            await self.link.close()

    # ------------------------------------------------------------------ the leader

    def _on_moved(self) -> None:
        self._hello_due.set()

    async def _keep_hello(self) -> None:
        """Say hello, then beat every third of the lease; hello again whenever the link
        moved or the leader does not know this worker."""
        self._hello_due.set()
        while not self._stopped:
            try:
                if self._hello_due.is_set():
                    self._hello_due.clear()
                    await self._hello()
                    self._report_wake.set()  # results kept for the old leader go to this one
                (lost,) = await self.link.request(p.BEAT, [[i, e] for i, (e, _) in
                                                           self.running.items()])
                if lost is None:
                    self._hello_due.set()
                    continue
                self._forget(lost)
            except (Unavailable, ValueError) as exc:
                log.warning("the queue did not answer: %s", exc)
                self._hello_due.set()
            try:
                await asyncio.wait_for(self._hello_due.wait(), self.lease_s / 3)
            except asyncio.TimeoutError:
                pass

    async def _hello(self) -> None:
        info = {"worker": self.id, "capacity": self.capacity, "draining": self._draining,
                "types": {t: v for t, (_, v) in self.handlers.items()},
                "running": [[i, e] for i, (e, _) in self.running.items()]}
        (welcome,) = await self.link.request(p.HELLO, info)
        self.lease_s = float(welcome.get("lease_s", self.lease_s))
        self._forget(welcome.get("lost") or [])

    def _forget(self, lost: list[Any]) -> None:
        """Attempts the leader no longer counts as current: they may finish, their results
        will be refused."""
        for task_id, epoch in lost:
            if task_id in self.running and self.running[task_id][0] == epoch:
                self.counters["lost"] += 1
                log.warning("attempt %d of %s is no longer current", epoch, task_id)

    # ------------------------------------------------------------------ running tasks

    def _on_run(self, items: list[Any]) -> None:
        for row in items[2] if len(items) > 2 and isinstance(items[2], list) else []:
            try:
                task_id, epoch, kind, payload, timeout, attempt, redelivered, _ = row
                attempt_of = Attempt(str(task_id), int(epoch), str(kind), int(attempt),
                                     bool(redelivered), float(timeout or 0))
            except (TypeError, ValueError) as exc:
                log.warning("dropped a malformed task from the queue: %r", exc)
                continue
            run = asyncio.ensure_future(self._run_one(attempt_of, payload))
            self.running[attempt_of.id] = (attempt_of.epoch, run)
            self.counters["started"] += 1

    async def _run_one(self, attempt: Attempt, payload: Any) -> None:
        handler = self.handlers.get(attempt.type)
        ok, value = False, f"this worker has no handler of {attempt.type!r}"
        if handler is not None:
            ok, value = await self._call(handler[0], payload, attempt)
        if ok:
            try:
                if len(msgpack.packb(value, use_bin_type=True)) > p.MAX_PAYLOAD:
                    ok, value = False, f"the result is over {p.MAX_PAYLOAD} bytes"
            except (TypeError, ValueError, OverflowError) as exc:
                ok, value = False, f"the result does not serialise: {exc!r}"
        self.counters["succeeded" if ok else "failed"] += 1
        self._reports[(attempt.id, attempt.epoch)] = [attempt.id, attempt.epoch, ok, value]
        self._report_wake.set()

    async def _call(self, fn: Callable, payload: Any, attempt: Attempt) -> tuple[bool, Any]:
        shape = self._shapes.get(fn)
        if shape is None:  # looked at once per handler, not per task
            shape = self._shapes[fn] = (_takes_two(fn), inspect.iscoroutinefunction(fn))
        args = (payload, attempt) if shape[0] else (payload,)
        try:
            if shape[1]:
                work: Any = fn(*args)
            else:  # a thread of this worker's own: one per slot, so none waits for a thread
                work = asyncio.get_running_loop().run_in_executor(
                    self._threads, functools.partial(fn, *args))
            if attempt.timeout:
                return True, await asyncio.wait_for(work, attempt.timeout)
            return True, await work
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            return False, f"timeout after {attempt.timeout:g} s"
        except asyncio.CancelledError:
            if self._stopped:  # the worker stops: the attempt is left to its lease
                raise
            return False, "CancelledError raised by the handler"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def _report_loop(self) -> None:
        while not self._stopped:
            await self._report_wake.wait()
            self._report_wake.clear()
            while self._reports:
                batch = p.cut_by_size(list(self._reports.values())[:p.MAX_BATCH])[0]
                try:
                    (reasons,) = await self.link.request(p.RESULT, batch)
                except (Unavailable, ValueError) as exc:
                    log.warning("results not recorded yet: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                for (task_id, epoch, _, _), reason in zip(batch, reasons):
                    self._reports.pop((task_id, epoch), None)
                    if self.running.get(task_id, (None,))[0] == epoch:
                        del self.running[task_id]
                    if reason:
                        self.counters["refused"] += 1
                        log.warning("the queue refused the result of attempt %d of %s: %s",
                                    epoch, task_id, reason)


def _takes_two(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(q.kind is q.VAR_POSITIONAL for q in params)
