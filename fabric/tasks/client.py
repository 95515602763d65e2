"""Submitting tasks and asking after them.

    async with TaskQueue(names, "jobs") as queue:
        handle = await queue.submit("resize", {"image": "a.png"}, key="resize-a", retries=3)
        print(await handle.result(timeout=60))

A submission is made once: with ``key``, for good (a submit with a key seen before returns
the first task, ``handle.created`` False); without, the client gives it a random token kept
with the task, so a submit sent again after a timeout or a leader's failover is not made
twice either.
"""
from __future__ import annotations

import builtins
import datetime
import secrets
import time
from typing import Any

from fabric.errors import FabricError
from fabric.tasks import protocol as p
from fabric.tasks.link import QueueLink
from fabric.tasks.protocol import TaskSpec
from fabric.tasks.state import FINISHED
from nameservice.names import Names

__all__ = ["TaskFailed", "TaskHandle", "TaskQueue", "TaskRefused"]

WAIT_S = 5.0
"""How long one ``wait`` request is held by the leader (the handle asks again after)."""


class TaskRefused(FabricError, ValueError):
    """The queue refused a request: a malformed task, a full queue, an unknown task."""


class TaskFailed(FabricError):
    """The task ended without a result: ``dead`` (no retries left) or ``cancelled``.
    ``task`` holds it (its ``errors``, its ``state``)."""

    def __init__(self, task: dict[str, Any]) -> None:
        errors = task.get("errors") or []
        super().__init__(f"task {task.get('id')} is {task.get('state')}"
                         + (f": {errors[-1]}" if errors else ""))
        self.task = task


class TaskHandle:
    """A submitted task: ``id``, whether this submit made it (``created``), and its result."""

    def __init__(self, queue: TaskQueue, task_id: str, created: bool) -> None:
        self.queue = queue
        self.id = task_id
        self.created = created

    async def status(self) -> dict[str, Any]:
        """The task as the queue holds it now."""
        task = await self.queue.get(self.id)
        if task is None:
            raise TaskRefused(f"no task {self.id} (purged?)")
        return task

    async def result(self, timeout: float | None = None) -> Any:
        """Wait until the task finishes: its result; TaskFailed if it ended dead or
        cancelled; TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            hold = WAIT_S if deadline is None else max(0.0, min(WAIT_S,
                                                                deadline - time.monotonic()))
            (task,) = await self.queue.link.request(p.WAIT, self.id, hold,
                                                    attempt_s=hold + 2.0)
            if task is None:
                raise TaskRefused(f"no task {self.id} (purged?)")
            if task["state"] == "done":
                return task["result"]
            if task["state"] in FINISHED:
                raise TaskFailed(task)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} is still {task['state']}")

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r}, created={self.created})"


def _when(run_at: float | datetime.datetime | None) -> float | None:
    if isinstance(run_at, datetime.datetime):
        if run_at.tzinfo is None:
            raise TaskRefused("run_at must be a timezone-aware datetime (or a Unix time)")
        return run_at.timestamp()
    return run_at


class TaskQueue:
    """A client of the queue ``name`` (see module docstring); ``addresses``: the replicas'
    serve addresses, when there is no name service to find them in."""

    def __init__(self, names: Names | None, name: str = "tasks", *,
                 addresses: list[str] | None = None, timeout: float = 30.0) -> None:
        self.name = name
        self.link = QueueLink(names, name, addresses=addresses, timeout=timeout)

    async def __aenter__(self) -> TaskQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection."""
        await self.link.close()

    async def submit(self, type: str, payload: Any = None, *, key: str | None = None,
                     run_at: float | datetime.datetime | None = None,
                     delay: float | None = None, every: float | None = None,
                     cron: str | None = None, retries: int = 0, timeout: float = 0.0,
                     version: str = "", backoff: float = 1.0) -> TaskHandle:
        """Submit one task (see module docstring); its handle. ``run_at`` or ``delay``: not
        before then; ``every`` (seconds) or ``cron`` (UTC): a schedule firing a task each
        period; ``retries``: attempts after the first that fail; ``timeout``: a handler's
        limit per attempt; ``version``: only workers of that version of ``type`` run it;
        ``backoff``: the first retry's pause (doubled per attempt, with jitter)."""
        spec = TaskSpec(type, payload, key=key, run_at=_when(run_at), delay=delay,
                        every=every, cron=cron, retries=retries, timeout=timeout,
                        version=version, backoff=backoff)
        (handle,) = await self.submit_many([spec])
        return handle

    async def submit_many(self, specs: builtins.list[TaskSpec]) -> builtins.list[TaskHandle]:
        """Submit several tasks in one request (at most ``protocol.MAX_BATCH``)."""
        maps = []
        for spec in specs:
            if spec.key is None and spec.once is None:
                spec.once = secrets.token_hex(12)
            maps.append(spec.to_map())
        try:  # the leader checks too; here for a clear error before anything is sent
            for m in maps:
                p.spec_from_map(m)
        except FabricError as exc:
            raise TaskRefused(str(exc)) from None
        (results,) = await self._request(p.SUBMIT, maps)
        handles = []
        for result in results:
            if not isinstance(result, list) or len(result) != 2 or result[0] is None:
                raise TaskRefused(str(result[1] if isinstance(result, list) else result))
            task_id, created = result
            handles.append(TaskHandle(self, task_id, bool(created)))
        return handles

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The task as the leader holds it (None: no such task)."""
        (task,) = await self._request(p.GET, task_id)
        return task

    async def list(self, *, state: str | None = None, type: str | None = None,
                   limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Tasks, filtered by state and type, at most ``limit``."""
        query: dict[str, Any] = {"limit": limit}
        if state is not None:
            query["state"] = state
        if type is not None:
            query["type"] = type
        (tasks,) = await self._request(p.LIST, query)
        return tasks

    async def cancel(self, task_id: str) -> None:
        """Cancel a task not finished (a running attempt's result will be refused)."""
        await self._request(p.CANCEL, task_id)

    async def retry(self, task_id: str) -> None:
        """Run a dead or cancelled task again, with a fresh count of attempts."""
        await self._request(p.RETRY, task_id)

    async def stats(self) -> dict[str, Any]:
        """The leader's counts per state and counters."""
        (stats,) = await self._request(p.STATS)
        return stats

    async def _request(self, name: str, *args: Any) -> builtins.list[Any]:
        try:
            return await self.link.request(name, *args)
        except ValueError as exc:
            raise TaskRefused(str(exc)) from None
