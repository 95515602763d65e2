"""The queue leader's view of its workers and of the attempts they run (leader-local: a new
leader builds both again, from the workers' hellos and the replicated running tasks).

``Dispatcher``: each worker that said hello has a number of slots (its capacity); a task goes
only to a worker that serves its type (and the version the task asks for, if any), is
registered in the name service and was heard within its lease, and only into a free slot — no
prefetch beyond what a worker can run. Workers take turns; each takes the oldest task among
the queues it serves.

``Leases``: each attempt dispatched holds a lease of ``lease_s``, extended by its worker's
heartbeats; an attempt whose lease lapsed, or whose worker left the name service, is lost (the
front proposes EXPIRE once for it).
"""
from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from fabric.errors import DecodeError
from fabric.tasks.state import DISPATCH, QueueState, Task

__all__ = ["Dispatcher", "Leases", "WorkerSeat"]

MAX_CAPACITY = 10_000
MAX_WORKERS = 10_000
MAX_BACKOFF_S = 3600.0
_LAST = 1 << 62  # the order of a task submitted in the entry being built (after every other)

Queue = tuple[str, str]


class WorkerSeat:
    """A worker as the leader knows it."""

    __slots__ = ("id", "ident", "types", "capacity", "inflight", "queues", "reported",
                 "heard", "seen_live", "draining")

    def __init__(self, worker_id: str, ident: bytes, types: dict[str, str], capacity: int,
                 reported: list[tuple[str, int]]) -> None:
        self.id, self.ident, self.types, self.capacity = worker_id, ident, types, capacity
        self.inflight: set[str] = set()
        self.queues: list[Queue] = [q for t, v in sorted(types.items())
                                    for q in ((t, ""), (t, v)) if q[1] or q == (t, "")]
        self.queues = list(dict.fromkeys(self.queues))
        self.reported = reported
        self.heard = time.monotonic()
        self.seen_live = False
        self.draining = False  # it finishes what it runs and takes nothing more

    @property
    def free(self) -> int:
        """Slots this worker has room in."""
        return 0 if self.draining else self.capacity - len(self.inflight)


class Dispatcher:
    """Which waiting task goes to which worker (see module docstring)."""

    def __init__(self, state: QueueState, live_workers: Callable[[], set[str]],
                 lease_s: float = 10.0) -> None:
        self.state = state
        self._live = live_workers
        self.lease_s = lease_s
        self.reset()

    def reset(self) -> None:
        """Forget every worker (a new leadership, or none)."""
        self.workers: dict[str, WorkerSeat] = {}
        self._idents: dict[bytes, WorkerSeat] = {}
        self._claimed: set[str] = set()
        self._fresh: dict[Queue, list[str]] = {}
        self._turn = 0

    def hello(self, ident: bytes, info: dict[str, Any]) -> WorkerSeat:
        """A worker (re)introduced itself; DecodeError if its hello is malformed."""
        worker_id, types = info.get("worker"), info.get("types")
        capacity, running = info.get("capacity", 1), info.get("running", [])
        if not isinstance(worker_id, str) or not 0 < len(worker_id) <= 256:
            raise DecodeError("hello needs a worker id")
        if not isinstance(types, dict) or not types or not all(
                isinstance(t, str) and isinstance(v, str) for t, v in types.items()):
            raise DecodeError("hello needs its types, a map of type -> version")
        if isinstance(capacity, bool) or not isinstance(capacity, int) \
                or not 0 < capacity <= MAX_CAPACITY:
            raise DecodeError(f"capacity must be 1..{MAX_CAPACITY}")
        if not isinstance(running, list) or not all(
                isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
                and isinstance(r[1], int) for r in running):
            raise DecodeError("running must list [task id, epoch] pairs")
        old = self.workers.pop(worker_id, None)
        if old is not None:
            self._idents.pop(old.ident, None)
        elif len(self.workers) >= MAX_WORKERS:
            raise DecodeError(f"{MAX_WORKERS} workers already")
        seat = WorkerSeat(worker_id, ident, dict(types), capacity,
                          [(r[0], r[1]) for r in running])
        seat.draining = bool(info.get("draining"))
        if old is not None:  # dispatches not applied yet still hold their slots
            seat.inflight |= old.inflight & self._claimed
        self.workers[worker_id] = seat
        self._idents[ident] = seat
        return seat

    def by_ident(self, ident: bytes) -> WorkerSeat | None:
        """The worker behind a socket identity, marked heard now (None: it said no hello to
        this leader)."""
        seat = self._idents.get(ident)
        if seat is not None:
            seat.heard = time.monotonic()
        return seat

    def fresh(self, task_id: str, queue: Queue) -> None:
        """A task being submitted in the entry now built: it may be dispatched in the same
        entry, after the tasks already waiting in its queue."""
        self._fresh.setdefault(queue, []).append(task_id)

    def assign(self) -> list[tuple[WorkerSeat, str]]:
        """Waiting tasks given to free slots now (each must become a DISPATCH command)."""
        fresh, self._fresh = self._fresh, {}
        live, now = self._live(), time.monotonic()
        seats = []
        for seat in self.workers.values():
            if seat.id in live:
                seat.seen_live = True
                if seat.free > 0 and now - seat.heard < self.lease_s:
                    seats.append(seat)
        if not seats:
            return []
        self._turn += 1
        shift = self._turn % len(seats)
        seats = seats[shift:] + seats[:shift]
        heads: dict[Queue, tuple[Iterator[str], str | None]] = {}
        tasks, claimed = self.state.tasks, self._claimed

        def head(queue: Queue) -> str | None:
            if queue not in heads:
                found = itertools.chain(self.state.waiting_ids(queue), fresh.get(queue, ()))
                heads[queue] = (found, next((i for i in found if i not in claimed), None))
            return heads[queue][1]

        def order(task_id: str) -> int:
            task = tasks.get(task_id)
            return task.order if task is not None else _LAST

        out: list[tuple[WorkerSeat, str]] = []
        progress = True
        while progress:
            progress = False
            for seat in seats:
                if seat.free <= 0:
                    continue
                best = min((q for q in seat.queues if head(q) is not None),
                           key=lambda q: order(heads[q][1] or ""), default=None)
                if best is None:
                    continue
                found, task_id = heads[best]
                assert task_id is not None
                claimed.add(task_id)
                heads[best] = (found, next((i for i in found if i not in claimed), None))
                seat.inflight.add(task_id)
                out.append((seat, task_id))
                progress = True
        return out

    @staticmethod
    def command(task_id: str, seat: WorkerSeat) -> list[Any]:
        """The DISPATCH command of ``task_id`` to ``seat``."""
        return [DISPATCH, task_id, seat.id]

    def settled(self, task_id: str) -> None:
        """The dispatch of ``task_id`` was applied (or will not be)."""
        self._claimed.discard(task_id)

    def release(self, worker_id: str, task_id: str) -> None:
        """``task_id`` no longer holds a slot of ``worker_id``."""
        seat = self.workers.get(worker_id)
        if seat is not None:
            seat.inflight.discard(task_id)

    def lost_workers(self) -> set[str]:
        """Workers that were registered and are not any more, and those never registered and
        silent for a lease (they are forgotten)."""
        live, now = self._live(), time.monotonic()
        lost = {w for w, seat in self.workers.items() if w not in live
                and (seat.seen_live or now - seat.heard > self.lease_s)}
        for worker_id in lost:
            seat = self.workers.pop(worker_id)
            self._idents.pop(seat.ident, None)
        return lost

    @staticmethod
    def backoff(task: Task) -> float:
        """How long a failed attempt waits before the next: the task's ``backoff`` doubled per
        attempt made, at most an hour, times a random 0.5..1 (jitter: failures caused together
        are not retried together)."""
        base = min(MAX_BACKOFF_S, task.backoff * 2 ** max(0, task.attempts - 1))
        return base * (0.5 + random.random() / 2)

    def status(self) -> list[dict[str, Any]]:
        """Each worker's types, capacity and slots in use."""
        return [{"worker": s.id, "types": s.types, "capacity": s.capacity,
                 "running": len(s.inflight)} for s in self.workers.values()]


class Leases:
    """The running attempts' leases (see module docstring)."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._attempts: dict[str, list[Any]] = {}  # id -> [epoch, worker, until, expiring]

    def __len__(self) -> int:
        return len(self._attempts)

    def reset(self, running: list[Task], now: float) -> None:
        """A new leader: every running attempt gets a whole lease from ``now`` (its worker
        has that long to say it is alive)."""
        self._attempts = {t.id: [t.epoch, t.worker, now + self.lease_s, False] for t in running}

    def start(self, task_id: str, epoch: int, worker: str, now: float) -> None:
        """An attempt was dispatched."""
        self._attempts[task_id] = [epoch, worker, now + self.lease_s, False]

    def adopt(self, task_id: str, epoch: int, worker: str, now: float) -> None:
        """An attempt applied as running: it gets a lease unless it has one (a dispatch of an
        earlier leader applied after this one took over has none yet)."""
        attempt = self._attempts.get(task_id)
        if attempt is None or attempt[0] != epoch:
            self._attempts[task_id] = [epoch, worker, now + self.lease_s, False]

    def extend(self, task_id: str, epoch: int, worker: str, now: float) -> bool:
        """The worker says it still runs this attempt: False if the attempt is not current
        (lost already, or another's)."""
        attempt = self._attempts.get(task_id)
        if attempt is None or attempt[0] != epoch or attempt[1] != worker or attempt[3]:
            return False
        attempt[2] = now + self.lease_s
        return True

    def drop(self, task_id: str, epoch: int | None = None) -> str:
        """Forget an attempt (finished or expired; only attempt ``epoch``, if given); its
        worker ("" if none was known)."""
        attempt = self._attempts.get(task_id)
        if attempt is None or epoch is not None and attempt[0] != epoch:
            return ""
        del self._attempts[task_id]
        return attempt[1]

    def expire_again(self, task_id: str) -> None:
        """The EXPIRE of this attempt was not applied here: propose it again if still due."""
        attempt = self._attempts.get(task_id)
        if attempt is not None:
            attempt[3] = False

    def lapsed(self, now: float, lost_workers: set[str]) -> list[tuple[str, int, str]]:
        """Attempts lost now, each once: ``(task id, epoch, why)``."""
        out = []
        for task_id, attempt in self._attempts.items():
            if attempt[3]:
                continue
            if attempt[1] in lost_workers:
                reason = f"worker {attempt[1]} left"
            elif attempt[2] < now:
                reason = f"lease of {self.lease_s:g} s lapsed on worker {attempt[1]}"
            else:
                continue
            attempt[3] = True
            out.append((task_id, attempt[0], reason))
        return out
