"""A client and a worker of the task queue written from docs/tasks-protocol.md alone, as a port
to another language would be: plain pyzmq and msgpack, nothing from ``fabric`` or
``nameservice`` (the classes above the harness line). They get only the replicas' serve
addresses.

The harness below that line starts a name service and three queue replicas in this process, as
tests/tasks/test_inprocess.py does, and registers the foreign worker in the name service on
its behalf (a foreign worker registers itself through the name-service protocol,
docs/ns-protocol.md; the harness does it here to keep the foreign code short).
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import secrets
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from nameservice.client import NameServiceClient
from nameservice.names import Names
from tests.tasks import test_inprocess as inprocess
from tests.waiting import async_wait_for

# ====================================================================== the foreign side
# Everything down to the harness line uses only asyncio, pyzmq and msgpack.

FINISHED = ("done", "dead", "cancelled")
MAX_BATCH = 10_000
ATTEMPT_S = 1.0
"""How long one attempt of a request waits for its answer before the link moves on."""
REDIRECT_PAUSE_S = 0.1


class Refused(Exception):
    """The queue answered ``error``: the request is wrong (do not send it again)."""


class _Moved(Exception):
    """The link moved to another socket while a request waited: send it again there."""


class Link:
    """One DEALER to the queue's leader. Requests are matched to answers by rid; ``redirect``
    is followed (to the address named, or the next replica after a pause when none is named or
    it names the replica that sent it); a replica silent for an attempt is left for the next
    one, on a new socket. ``on_run(rows)`` gets the ``run`` pushes; ``on_new_socket()`` is
    called whenever a new socket is opened (a worker must say hello on it)."""

    def __init__(self, addresses: list[str], *, attempt_s: float = ATTEMPT_S,
                 on_run: Callable[[list[Any]], None] | None = None,
                 on_new_socket: Callable[[], None] | None = None) -> None:
        self.addresses = list(addresses)
        self.attempt_s = attempt_s
        self.on_run = on_run
        self.on_new_socket = on_new_socket or (lambda: None)
        self.ctx = zmq.asyncio.Context.instance()
        self.sock: zmq.asyncio.Socket | None = None
        self.address = ""
        self.generation = 0  # how many sockets this link has opened
        self.turn = 0
        self.rids = itertools.count(1)  # rid 0 is the queue's, for run pushes
        self.waiting: dict[int, asyncio.Future] = {}
        self.receiver: asyncio.Task | None = None
        self.moves = 0
        self.redirects = 0

    async def request(self, name: str, *args: Any, hold: float = 0.0,
                      timeout: float = 30.0) -> Any:
        """The answer's payload (the item after the rid); Refused on ``error``; TimeoutError
        after ``timeout``. ``hold``: how long the queue may hold it (``wait``)."""
        payload, _ = await self.request_on(name, *args, hold=hold, timeout=timeout)
        return payload

    async def request_on(self, name: str, *args: Any, hold: float = 0.0,
                         timeout: float = 30.0) -> tuple[Any, int]:
        """``request``, and the generation of the socket that answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{name}: no leader answered within {timeout} s")
            if self.sock is None:
                self._open(self.addresses[self.turn % len(self.addresses)])
            sock, generation = self.sock, self.generation
            assert sock is not None
            rid = next(self.rids)
            future = loop.create_future()
            self.waiting[rid] = future
            try:
                # The same items each time: a submit's key or once token makes a resend safe.
                await sock.send(msgpack.packb([name, rid, *args], use_bin_type=True))
                answer = await asyncio.wait_for(future, min(self.attempt_s + hold, left))
            except asyncio.TimeoutError:
                if self.sock is sock:  # silent: the next replica, on a new socket
                    self._move("")
                continue
            except _Moved:
                continue
            finally:
                self.waiting.pop(rid, None)
            if answer[0] == "redirect":
                self.redirects += 1
                hint = answer[2] if len(answer) > 2 and isinstance(answer[2], str) else ""
                if not hint or hint == self.address:  # no leader known, or no quorum yet
                    await asyncio.sleep(REDIRECT_PAUSE_S)
                    hint = ""
                if self.sock is sock:
                    self._move(hint)
                continue
            if answer[0] == "error":
                raise Refused(str(answer[2]))
            return answer[2], generation

    def close(self) -> None:
        """Close the socket."""
        self._drop()

    def _open(self, address: str) -> None:
        self._drop()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        self.sock, self.address = sock, address
        self.generation += 1
        self.receiver = asyncio.ensure_future(self._receive(sock))
        self.on_new_socket()

    def _move(self, hint: str) -> None:
        self.moves += 1
        if hint:
            if hint not in self.addresses:
                self.addresses.append(hint)
        else:
            self.turn += 1
            hint = self.addresses[self.turn % len(self.addresses)]
        self._open(hint)

    def _drop(self) -> None:
        if self.receiver is not None:
            self.receiver.cancel()
            self.receiver = None
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.address = ""
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(_Moved())

    async def _receive(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frame = await sock.recv()
            try:
                items = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            except Exception:  # not msgpack: dropped
                continue
            if not isinstance(items, list) or len(items) < 3 or not isinstance(items[0], str):
                continue
            if items[0] == "run":
                if self.on_run is not None:
                    self.on_run(items[2])
                continue
            future = self.waiting.get(items[1]) if isinstance(items[1], int) else None
            if future is not None and not future.done():
                future.set_result(items)


class ForeignClient:
    """Submit, wait, get, list, cancel, stats."""

    def __init__(self, addresses: list[str]) -> None:
        self.link = Link(addresses)

    async def submit(self, specs: list[dict[str, Any]]) -> list[list[Any]]:
        """``[id, created]`` or ``[None, reason]`` per spec. Each spec carries a key or a once
        token, so the link may send the frame again after a timeout or a redirect."""
        assert all("key" in spec or "once" in spec for spec in specs)
        return await self.link.request("submit", specs)

    async def wait(self, task_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The task once it finished (or None: no such task)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            hold = max(0.0, min(5.0, deadline - loop.time()))
            view = await self.link.request("wait", task_id, hold, hold=hold)
            if view is None or view["state"] in FINISHED:
                return view
            if loop.time() >= deadline:
                raise TimeoutError(f"task {task_id} is still {view['state']}")

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return await self.link.request("get", task_id)

    async def list(self, **query: Any) -> list[dict[str, Any]]:
        return await self.link.request("list", query)

    async def cancel(self, task_id: str) -> None:
        await self.link.request("cancel", task_id)

    async def stats(self) -> dict[str, Any]:
        return await self.link.request("stats")

    def close(self) -> None:
        self.link.close()


class ForeignWorker:
    """Hello on every new socket, a beat every third of the lease with the attempts it holds,
    each result kept until it is recorded (and sent again to whichever replica leads then)."""

    def __init__(self, addresses: list[str], worker_id: str, types: dict[str, str],
                 capacity: int, handler: Callable[[str, Any], Any]) -> None:
        self.id, self.types, self.capacity, self.handler = worker_id, types, capacity, handler
        self.hello_due = asyncio.Event()
        self.report_wake = asyncio.Event()
        self.link = Link(addresses, on_run=self._on_run, on_new_socket=self.hello_due.set)
        self.lease_s = 10.0
        self.running: dict[str, int] = {}  # task id -> epoch: attempts held until recorded
        self.reports: dict[tuple[str, int], list[Any]] = {}  # results not recorded yet
        self.runs: list[list[Any]] = []  # every run row received
        self.lost: list[list[Any]] = []  # attempts the leader said were not current
        self.refused: list[tuple[str, int, str]] = []
        self.hellos = 0

    async def run(self) -> None:
        """Serve until cancelled."""
        self.hello_due.set()
        loops = [asyncio.ensure_future(self._keep_hello()),
                 asyncio.ensure_future(self._report_loop())]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a loop that failed fails the worker
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self.link.close()

    def _on_run(self, rows: list[Any]) -> None:
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, list) or len(row) != 8:
                continue  # malformed: dropped (its attempt's lease lapses)
            task_id, epoch, kind, payload, _timeout, _attempt, _redelivered, _version = row
            self.runs.append(row)
            self.running[task_id] = epoch
            try:
                ok, value = True, self.handler(kind, payload)
            except Exception as exc:
                ok, value = False, f"{type(exc).__name__}: {exc}"
            self.reports[(task_id, epoch)] = [task_id, epoch, ok, value]
        self.report_wake.set()

    def _attempts(self) -> list[list[Any]]:
        return [[task_id, epoch] for task_id, epoch in self.running.items()]

    async def _keep_hello(self) -> None:
        while True:
            try:
                if self.hello_due.is_set():
                    self.hello_due.clear()
                    welcome, generation = await self.link.request_on("hello", {
                        "worker": self.id, "types": self.types, "capacity": self.capacity,
                        "running": self._attempts()})
                    if generation == self.link.generation:
                        self.hello_due.clear()  # said on the socket in use: done
                    self.hellos += 1
                    self.lease_s = float(welcome["lease_s"])
                    self.lost += welcome["lost"]
                    self.report_wake.set()  # results kept for an old leader go to this one
                lost = await self.link.request("beat", self._attempts())
                if lost is None:  # this leader does not know us: hello again
                    self.hello_due.set()
                    continue
                self.lost += lost
            except TimeoutError:
                self.hello_due.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.hello_due.wait(), self.lease_s / 3)

    async def _report_loop(self) -> None:
        while True:
            await self.report_wake.wait()
            self.report_wake.clear()
            while self.reports:
                batch = list(self.reports.values())[:MAX_BATCH]
                try:
                    reasons = await self.link.request("result", batch)
                except TimeoutError:
                    continue  # kept: sent again
                for (task_id, epoch, _, _), reason in zip(batch, reasons):
                    self.reports.pop((task_id, epoch), None)
                    if self.running.get(task_id) == epoch:
                        del self.running[task_id]
                    if reason:
                        self.refused.append((task_id, epoch, reason))


# ====================================================================== the harness

ns = inprocess.ns  # the fixture: a name service of one node, in its own process

VIEW_FIELDS = {"id", "type", "version", "payload", "key", "key_kept", "state", "attempts",
               "epoch", "retries", "timeout", "backoff", "run_at", "submitted", "started",
               "finished", "worker", "result", "errors", "every", "cron", "parent", "fired",
               "skipped", "lateness", "redelivered", "recorded", "lost"}
"""The task view as docs/tasks-protocol.md lists it."""


def square(kind: str, payload: Any) -> Any:
    if kind != "sq":
        raise ValueError(f"no handler of {kind!r}")
    return payload * payload


async def scenario(client: ForeignClient) -> list[str]:
    # 50 tasks in three batches, each with a random once token.
    specs = [{"type": "sq", "payload": i, "once": secrets.token_hex(12)} for i in range(50)]
    batches = [specs[:20], specs[20:40], specs[40:]]
    ids: list[str] = []
    for batch in batches:
        results = await client.submit(batch)
        assert [created for _, created in results] == [True] * len(batch), results
        ids += [task_id for task_id, _ in results]
    assert len(set(ids)) == 50

    # Exactly once: one submit sent again (the same once token) names the same task.
    assert await client.submit([specs[7]]) == [[ids[7], False]]
    assert await client.submit(batches[0]) == [[task_id, False] for task_id in ids[:20]]

    for i, task_id in enumerate(ids):
        view = await client.wait(task_id)
        assert view is not None and view["state"] == "done", view
        assert view["result"] == i * i

    view = await client.get(ids[3])
    assert view is not None and set(view) == VIEW_FIELDS
    assert view["payload"] == 3 and view["result"] == 9 and view["recorded"] == view["epoch"]
    assert view["key"] == f"o:{specs[3]['once']}" and not view["key_kept"]
    assert await client.get("no-such-task") is None
    done = await client.list(type="sq", state="done", limit=1000)
    assert sorted(t["id"] for t in done) == sorted(ids)
    try:
        await client.cancel(ids[0])
        raise AssertionError("a done task was cancelled")
    except Refused as exc:
        assert "done already" in str(exc)
    stats = await client.stats()
    assert stats["counters"]["submitted"] == 50  # each made once
    assert stats["counters"]["deduplicated"] >= 21
    assert stats["counts"].get("done") == 50
    return ids


async def test_a_foreign_client_and_worker_submit_and_work_tasks(ns, tmp_path):
    async with NameServiceClient(ns) as ns_client:
        names = Names(ns_client)
        async with inprocess.queue_group(names, tmp_path) as group:
            # All the foreign code is given: the serve addresses, the leader's last (so that
            # both find it by following redirects).
            leading = {r.serve for r in group if r.front is not None and r.front.leading}
            addresses = sorted((r.serve for r in group), key=lambda a: a in leading)
            assert all(a.startswith("tcp://") for a in addresses)
            # A foreign worker registers itself through the name-service protocol
            # (docs/ns-protocol.md); the harness does it here to keep the foreign code short.
            async with names.register("queue/jobs/workers", "worker:go-1",
                                      {"worker": "go-1", "types": {"sq": ""}, "capacity": 4}):
                await async_wait_for(lambda: all("go-1" in r.workers for r in group), 10,
                                     "every replica to see the worker registered")
                worker = ForeignWorker(addresses, "go-1", {"sq": ""}, 4, square)
                client = ForeignClient(addresses)
                serving = asyncio.ensure_future(worker.run())
                playing = asyncio.ensure_future(scenario(client))
                try:
                    await asyncio.wait({serving, playing}, timeout=60,
                                       return_when=asyncio.FIRST_COMPLETED)
                    assert not serving.done(), serving  # the worker's loops did not fail
                    assert playing.done(), "the client did not finish within 60 s"
                    ids = playing.result()
                finally:
                    for task in (serving, playing):
                        task.cancel()
                    await asyncio.gather(serving, playing, return_exceptions=True)
                    client.close()
            assert worker.hellos >= 1
            assert client.link.redirects >= 1 and worker.link.redirects >= 1
            assert {row[0] for row in worker.runs} == set(ids)
            assert not worker.reports  # every result recorded
            await async_wait_for(
                lambda: len({r.state.state_digest() for r in group}) == 1
                and len({r.state.applied_index for r in group}) == 1, 10, "replicas to agree")


def test_the_foreign_side_uses_nothing_of_fabric():
    """The classes a port would write use only asyncio, pyzmq and msgpack."""
    source = "".join(inspect.getsource(part) for part in (Refused, _Moved, Link, ForeignClient,
                                                          ForeignWorker))
    for name in ("fabric", "nameservice", "Names", "inprocess", "async_wait_for"):
        assert name not in source
