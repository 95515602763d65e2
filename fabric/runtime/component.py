"""The component runtime: run an ordinary ``async`` function as a fabric process.

    async def main(ctx):                              # producer.py
        out = await ctx.output("orders")
        while not ctx.stopping.is_set():
            await out.send({"order": 1})

    $ fabric component run producer.py:main --name producer-1

The runtime imports the function, gives it a :class:`ComponentContext` (its name, its
parameters, ports by channel *name* and a ``stopping`` event), and keeps every port it opened
connected to the intermediaries currently registered for its channel
(:mod:`fabric.runtime.resolver`).
It serves a control socket (``status``, ``drain``; :mod:`nameservice.control`) registered as
``process/<name>``. On SIGTERM, SIGINT or ``fabric drain NAME`` it deregisters, sets
``stopping``, waits for the function to return, then drains every port (outputs: until what
they sent is acknowledged; inputs: no new batches, everything received handled and
acknowledged) and exits 0. What it could not flush within the drain timeout is reported and
the exit code is 1 (130 if it was stopped by SIGINT, 0 otherwise). A function that returns
by itself is drained the same way.

With a metrics address (``metrics``, else ``FABRIC_METRICS``) the process serves the Prometheus
metrics of every port it opens at ``http://HOST:PORT/metrics`` (the bound address is logged).

Its events (:func:`nameservice.logs.event`: log records, and JSON lines on stdout with
``fabric component run --events``; the butterfly demo reads them): ``control`` (``endpoint``)
at start, ``endpoints`` (``channel``, ``added``, ``removed``, ``endpoints``, ``at``) after each
change of a port's intermediaries, ``connected`` (``channel``, ``endpoints``, ``at``) once the
connections to added ones are up, ``drained`` (the drain report and the final ``status``) at
the end; and whatever the function emits with :meth:`ComponentContext.event`.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fabric.errors import ConfigError, FabricError
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from fabric.ports.partitioned import PartitionedOutput, partition_channel
from fabric.ports.received import Handler
from fabric.runtime import runner
from fabric.runtime.peers import DEFAULT_BARRIER_S, Peers
from fabric.runtime.registry import channel_partitions, watch_channel
from fabric.runtime.resolver import Change, Resolver
from nameservice.logs import event
from nameservice.security.context import current as security
from nameservice.security.follow import follow_rules

if TYPE_CHECKING:
    from fabric.ports.metrics import PortCollector

log = logging.getLogger(__name__)
EXIT_INTERRUPTED = 130
"""The exit code after a clean stop asked for with SIGINT (Ctrl-C), as shells expect."""

ENV_NETWORK = "FABRIC_NETWORK"
"""Set by the agent that started this process: the deployed network it belongs to."""
ENV_BARRIER = "FABRIC_START_BARRIER_S"
"""How long the start barrier waits (seconds; default 60)."""
CONNECT_WAIT_S = 10.0
CONNECT_POLL_S = 0.001
ComponentFunction = Callable[["ComponentContext"], Awaitable[Any]]


def load_object(spec: str) -> Any:
    """``MODULE:NAME`` or ``path/to/file.py:NAME`` -> that object of the module;
    :class:`ConfigError` if it cannot be found. The current directory is importable."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected MODULE:FUNC (or MODULE:CLASS), got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(f"no such file: {module_name}")
            unique = f"_fabric_component_{path.stem}"
            spec_ = importlib.util.spec_from_file_location(unique, path)
            if spec_ is None or spec_.loader is None:
                raise ConfigError(f"cannot load {module_name} as a Python module")
            module = importlib.util.module_from_spec(spec_)
            sys.modules[unique] = module
            spec_.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name}: {exc}") from None
    found = getattr(module, attr, None)
    if found is None:
        raise ConfigError(f"{module_name} has no {attr}")
    return found


def load_target(spec: str) -> ComponentFunction:
    """``MODULE:FUNC`` or ``path/to/file.py:FUNC`` -> the function; :class:`ConfigError` if it
    cannot be found or is not an ``async`` function. The current directory is importable."""
    if spec.rpartition(":")[1] != ":" or not all(spec.rpartition(":")[::2]):
        raise ConfigError(f"expected MODULE:FUNC, got {spec!r}")
    func = load_object(spec)
    if not inspect.iscoroutinefunction(func):
        raise ConfigError(f"{spec} is not an async function")
    return func


class ComponentContext:
    """What a component function gets: its name, parameters, ports and a stopping event.

    ``params``: the ``--param KEY=VALUE`` pairs given on the command line (strings).
    ``stopping``: set when the process was asked to stop (SIGTERM, drain); the function should
    stop producing and return. Ports opened here are drained and closed by the runtime; used
    alone, ``async with ComponentContext(...) as ctx:`` drains them when the block ends
    normally and closes them at once when it raises.
    ``peers``: in a network deployed with ``fabric deploy`` (docs/cluster.md), its members'
    registrations (:class:`fabric.runtime.peers.Peers`); ``output`` then waits until every
    member registered (the start barrier, at most ``barrier_timeout`` seconds), and
    :meth:`on_peer` tells when a member's registration lapses or comes back.
    """

    def __init__(self, name: str, names: Any, params: dict[str, str] | None = None) -> None:
        self.log = logging.getLogger(f"{__name__}.{name}")
        self.name = name
        self.params = dict(params or {})
        self.stopping = asyncio.Event()
        self._names = names
        self.outputs: list[OutputPort] = []
        self.inputs: list[InputPort] = []
        self.resolvers: list[Resolver] = []
        self.drain_timeout = 10.0
        self.metrics: PortCollector | None = None
        """Where the ports opened here are added, when the process serves metrics."""
        self._tasks: set[asyncio.Task] = set()
        self._drained: asyncio.Future | None = None
        self.peers: Peers | None = None
        self.barrier_timeout = DEFAULT_BARRIER_S

    def on_peer(self, callback: Callable[[str, bool], None]) -> None:
        """Call ``callback(process_name, registered)`` when a member of this component's
        network loses its registration (its lease lapsed: it died, was cut off, or stopped)
        or registers again. Outside a deployed network there are no peers to tell of."""
        if self.peers is not None:
            self.peers.listeners.append(callback)

    def event(self, kind: str, /, **fields: Any) -> None:
        """Tell the process's supervisor something (progress, a count): a log record and, with
        ``--events``, a JSON line ``{"event": KIND, "time": ..., **fields}`` on stdout."""
        event(self.log, kind, **fields)

    async def output(self, channel: str, *, wait: float = 10.0,
                     **options: Any) -> OutputPort | PartitionedOutput:
        """An :class:`OutputPort` on ``channel``, connected to its registered intermediaries
        (waits up to ``wait`` seconds for the name service's first answer); for a channel
        declared with several partitions, a :class:`PartitionedOutput` (``send(payload,
        key=...)``) with a port on each. In a deployed network it first waits for the start
        barrier (:class:`StartBarrierTimeout` names who is missing)."""
        if self.peers is not None:
            await self.peers.wait_ready(self.barrier_timeout)
        client = getattr(self._names, "client", None)
        partitions = 1 if client is None else await asyncio.wait_for(
            channel_partitions(client, channel), wait)
        ports = []
        for partition in range(partitions):
            name = partition_channel(channel, partition, partitions)
            port = OutputPort(name, **options)
            await port.start()
            self.outputs.append(port)
            if self.metrics is not None:
                self.metrics.add(port)
            await self._follow(port, name, wait)
            ports.append(port)
        return ports[0] if partitions == 1 else PartitionedOutput(channel, ports)

    async def input(self, channel: str, handler: Handler, *, wait: float = 10.0,
                    **options: Any) -> InputPort:
        """An :class:`InputPort` on ``channel`` calling ``handler`` for each message."""
        port = InputPort(channel, handler=handler, **options)
        await port.start()
        self.inputs.append(port)
        if self.metrics is not None:
            self.metrics.add(port)
        await self._follow(port, channel, wait)
        return port

    async def _follow(self, port: Any, channel: str, wait: float) -> None:
        def announce(change: Change) -> None:
            event(log, "endpoints", channel=channel, added=list(change.added),
                  removed=list(change.removed), endpoints=sorted(port.endpoints), at=change.at)
            if change.added:
                task = asyncio.ensure_future(_announce_connected(port, channel, change.added))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        resolver = Resolver(port, lambda: watch_channel(self._names, channel),
                            on_change=announce)
        self.resolvers.append(resolver.start())
        try:
            await resolver.first(wait)
        except asyncio.TimeoutError:
            raise FabricError(f"no answer from the name service about channel {channel!r} "
                              f"within {wait:g} s") from None

    async def drain(self) -> dict[str, Any]:
        """Drain and close every port now (the runtime does it after the function returns;
        a function calls it to act after its last message is handled). Returns the outcome
        (``complete``, and what was ``left`` if not); later calls return the same outcome."""
        if self._drained is None:
            self._drained = asyncio.ensure_future(drain_ports(self, self.drain_timeout))
        return await asyncio.shield(self._drained)

    async def close(self) -> None:
        """Stop following the name service and close every port at once: what is not
        acknowledged is abandoned (use :meth:`drain` to flush it first)."""
        for resolver in self.resolvers:
            await resolver.close()
        for task in list(self._tasks):
            task.cancel()
        for port in self.ports:
            await port.close()

    async def __aenter__(self) -> ComponentContext:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        """Drain every port (bounded by ``drain_timeout``) when the block ended normally;
        close them at once, abandoning what is unacknowledged, when it raised."""
        if exc_type is None:
            await self.drain()
        else:
            await self.close()

    @property
    def ports(self) -> list[OutputPort | InputPort]:
        """Every port opened through this context, outputs first."""
        return [*self.outputs, *self.inputs]


async def _announce_connected(port: Any, channel: str, endpoints: tuple[str, ...],
                              timeout: float = CONNECT_WAIT_S) -> None:
    """Emit ``connected`` once the port's connections to ``endpoints`` are up (the
    moment a re-resolved intermediary is really in use), or give up after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not set(endpoints) <= set(port.connected):
        if loop.time() > deadline:
            return
        await asyncio.sleep(CONNECT_POLL_S)
    event(log, "connected", channel=channel, endpoints=list(endpoints), at=time.time())


async def drain_ports(ctx: ComponentContext, timeout: float) -> dict[str, Any]:
    """Stop following the name service, then drain every port of ``ctx`` within ``timeout``
    seconds (:func:`fabric.runtime.runner.drain_ports`: outputs first, then inputs). The outcome:
    ``complete``, what was ``left`` if the time ran out, and each port's report."""
    for resolver in ctx.resolvers:
        await resolver.close()
    for task in list(ctx._tasks):  # noqa: SLF001 - the context's own announcements
        task.cancel()
    reports = [r.to_dict() for r in await runner.drain_ports(ctx.ports, timeout)]
    return {"complete": all(r["complete"] for r in reports),
            "left_messages": sum(r["left_messages"] for r in reports),
            "left": [item for r in reports for item in r["left"]], "reports": reports}


class ComponentProcess:
    """One component function run as a process: its control socket, its registration as
    ``process/<name>``, and the drain (on SIGTERM, a control request, or when it returns)."""

    def __init__(self, func: ComponentFunction, name: str, names: Any, *,
                 params: dict[str, str] | None = None, drain_timeout: float = 10.0,
                 control: str = "tcp://127.0.0.1:0", metrics: str | None = None) -> None:
        self.ctx = ComponentContext(name, names, params)
        self.ctx.drain_timeout = drain_timeout
        self.func = func
        self.name = name
        self.names = names
        self.drain_timeout = drain_timeout
        self.control_endpoint = control
        self.metrics = metrics
        """``HOST:PORT`` of ``/metrics``; None: ``FABRIC_METRICS``, if set."""
        self._task: asyncio.Task | None = None
        self._registration: Any = None
        self._drain_asked = asyncio.Event()
        self.failed = False
        self.interrupted = False  # stopped by SIGINT (Ctrl-C)

    def _tell_peer(self, peer: str, registered: bool) -> None:
        if peer != self.name:  # its own registration ends with every drain
            self.ctx.event("peer_registered" if registered else "peer_lapsed", peer=peer)

    def status(self) -> dict[str, Any]:
        """The control socket's ``status``: kind, name, channel, endpoints, in-flight counts
        and every port's counters."""
        return runner.ports_status(self.name, self.ctx.ports, self.ctx.stopping.is_set())

    async def _drain(self, timeout: float | None) -> dict[str, Any]:
        """Deregister, stop the function, drain the ports; the drain report as a dict."""
        self._drain_asked.set()
        timeout = self.drain_timeout if timeout is None else timeout
        started = time.monotonic()
        if self._registration is not None:
            try:
                await self._registration.close()
            except Exception as exc:  # the lease expires by itself
                log.warning("could not deregister %s: %s", self.name, exc)
        self.ctx.stopping.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except asyncio.TimeoutError:
                log.error("%s did not return within %.1f s of being asked to stop",
                          self.name, timeout)
                task.cancel()
            except Exception:
                pass  # reported below
        if task is not None and task.done() and not task.cancelled() and task.exception():
            error = task.exception()
            log.error("%s failed: %s", self.name, error, exc_info=error)
            self.failed = True
        self.ctx.drain_timeout = max(0.001, timeout - (time.monotonic() - started))
        outcome = dict(await self.ctx.drain())
        elapsed = time.monotonic() - started
        return {"kind": "component", "name": self.name, **outcome,
                "elapsed_ms": round(elapsed * 1000, 1)}

    async def run(self) -> int:
        """Run until the function returns or a drain is asked for, then drain; the exit code:
        0 drained (130 if SIGINT asked for it), 1 the function failed or something could not
        be flushed."""
        from fabric.runtime.registry import process_name
        from nameservice.control import ControlServer

        served = runner.serve_port_metrics(self.metrics)
        if served is not None:
            self.ctx.metrics = served[1]
        server = ControlServer(self.status, self._drain, self.control_endpoint).start()
        client = getattr(self.names, "client", None)  # the access rules, with keys
        rules = asyncio.ensure_future(follow_rules(client, security())) \
            if client is not None else None
        event(log, "control", endpoint=server.endpoint)
        loop = asyncio.get_running_loop()

        def on_signal(sig: int) -> None:
            self.interrupted = self.interrupted or sig == signal.SIGINT
            server.drain_task()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        network = os.environ.get(ENV_NETWORK)
        try:
            self._registration = await self.names.register(
                process_name(self.name), server.endpoint, {"kind": "component"})
            if network and client is not None:
                self.ctx.peers = Peers(client, network).start()
                self.ctx.barrier_timeout = _seconds(os.environ.get(ENV_BARRIER),
                                                    DEFAULT_BARRIER_S)
                self.ctx.on_peer(self._tell_peer)
            self._task = asyncio.ensure_future(self.func(self.ctx))
            asked = asyncio.ensure_future(self._drain_asked.wait())
            await asyncio.wait({self._task, asked}, return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            report = await server.drain_task()  # the one asked for, or started now
            await server.answered()  # a waiting ``fabric drain`` gets its answer first
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if rules is not None:
                rules.cancel()
            if self.ctx.peers is not None:
                await self.ctx.peers.close()
            server.close()
            if served is not None:
                served[0].close()
        if not report["complete"]:
            for item in report["left"]:
                log.error("not flushed: %s", item)
        event(log, "drained", **report, status=self.status())
        if self.failed or not report["complete"]:
            return 1
        return EXIT_INTERRUPTED if self.interrupted else 0


def _seconds(text: str | None, default: float) -> float:
    try:
        found = float(text) if text else default
    except ValueError:
        found = -1.0
    if not found > 0:
        log.warning("%s=%r is not a number of seconds: using %g", ENV_BARRIER, text, default)
        return default
    return found


async def run_component(func: ComponentFunction, name: str, names: Any, *,
                        params: dict[str, str] | None = None, drain_timeout: float = 10.0,
                        control: str = "tcp://127.0.0.1:0", metrics: str | None = None) -> int:
    """Run ``func`` as the component ``name`` until it returns or is asked to stop (SIGTERM,
    SIGINT, ``fabric drain``), then drain; the process exit code (0 drained, 130 drained after
    SIGINT, 1 not).
    ``control``: where the control socket binds; ``metrics``: ``HOST:PORT`` where the ports'
    Prometheus metrics are served (None: ``FABRIC_METRICS``, if set)."""
    return await ComponentProcess(func, name, names, params=params,
                                  drain_timeout=drain_timeout, control=control,
                                  metrics=metrics).run()
