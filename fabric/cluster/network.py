"""A network description: the TOML file ``fabric deploy`` reads, checked, and the instances
it asks for.

    name = "orders"

    [components.producer]
    run = "shop.producer:main"          # MODULE:FUNC: a component function
    instances = 2
    params = { rate = "500", out = "{data}/sent" }

    [components.ledger]
    run = "shop.ledger:Ledger"          # MODULE:CLASS: a stateful component
    replicas = 3
    labels = { disk = "ssd" }

    [channels.orders]
    intermediaries = 3

    [queues.billing]                    # a task queue: a replica group
    replicas = 3

    [workers.billing-workers]           # workers of a queue: run = a MODULE of @task functions
    run = "shop.tasks"
    queue = "billing"
    instances = 4

Every table and key is checked (an unknown key is an error: a typo must not deploy a network
that silently ignores it). A component has either ``instances`` (a function: that many
processes) or ``replicas`` (a stateful class: a replica group of that size, each replica
running every one of its ``partitions``; a replica gone for ``replace_after`` seconds, default
10, has its seat taken by a new one). Placement: ``labels`` (an agent must carry every
one; every agent carries ``host = NAME``), ``spread`` (true: never two instances of one
component or channel on one host; false: spread when it can; default true for replicas and
intermediaries, false for function instances), ``slots`` (what one instance takes of an
agent's ``--slots``, default 1). ``version`` is free text: changing it (or ``run``,
``params``) is a rolling update. Parameter values are strings; the agent replaces
``{network}``, ``{instance}``, ``{index}``, ``{gen}``, ``{host}`` and ``{data}`` in them
(docs/cluster.md).
"""
from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import msgpack

from fabric.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["InstanceSpec", "Network", "parse_network", "network_from_wire"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_INSTANCES = 1000
"""Per component or channel; a network holds at most ``MAX_NETWORK_INSTANCES``."""
MAX_NETWORK_INSTANCES = 10_000
MAX_FILE_BYTES = 1 << 20
PLACEHOLDERS = frozenset({"network", "instance", "index", "gen", "host", "data"})
KINDS = ("function", "stateful", "intermediary", "queue", "worker")
REPLICATED = ("stateful", "queue")
"""Kinds whose instances are the members of a replica group: updated one at a time, broken
before made, on their host (they keep their data directory)."""

_COMPONENT_KEYS = {"run", "instances", "replicas", "partitions", "params", "labels", "spread",
                   "slots", "version", "input", "output", "replace_after"}
_CHANNEL_KEYS = {"intermediaries", "labels", "spread", "slots", "version"}
_QUEUE_KEYS = {"replicas", "lease", "replace_after", "labels", "spread", "slots", "version"}
_WORKER_KEYS = {"run", "queue", "instances", "concurrency", "types", "labels", "spread", "slots",
                "version"}


@dataclass(frozen=True)
class InstanceSpec:
    """One process a network asks for: what to run and where it may run.

    ``id`` is unique within the network (``producer-0``, ``ledger-r1``, ``orders-i2``);
    ``group`` is the component or channel it belongs to (spread is counted per group);
    ``digest`` changes exactly when what the process runs changes (a rolling update)."""

    id: str
    group: str
    kind: str
    index: int
    run: str = ""
    params: tuple[tuple[str, str], ...] = ()
    replicas: int = 0
    partitions: int = 1
    replace_after: float = 0.0
    channel: str = ""
    input: str = ""
    output: str = ""
    queue: str = ""
    concurrency: int = 1
    types: str = ""
    lease: float = 0.0
    version: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    spread: bool = False
    slots: int = 1
    digest: str = field(default="", compare=False)

    def to_wire(self) -> dict[str, Any]:
        """The spec as the agent receives it in a placement (msgpack-able)."""
        return {"id": self.id, "group": self.group, "kind": self.kind, "index": self.index,
                "run": self.run, "params": dict(self.params), "replicas": self.replicas,
                "partitions": self.partitions, "replace_after": self.replace_after,
                "channel": self.channel, "input": self.input,
                "output": self.output, "queue": self.queue, "concurrency": self.concurrency,
                "types": self.types, "lease": self.lease, "version": self.version}


def _digest(spec: InstanceSpec) -> str:
    what = spec.to_wire()
    return hashlib.sha256(msgpack.packb(what, use_bin_type=True)).hexdigest()[:16]


@dataclass(frozen=True)
class Network:
    """A checked network description and its instances, in file order."""

    name: str
    source: str
    instances: tuple[InstanceSpec, ...]

    def by_id(self) -> dict[str, InstanceSpec]:
        """Instance id -> spec."""
        return {spec.id: spec for spec in self.instances}

    def groups(self) -> dict[str, list[str]]:
        """Component or channel -> its instance ids."""
        found: dict[str, list[str]] = {}
        for spec in self.instances:
            found.setdefault(spec.group, []).append(spec.id)
        return found


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _name(where: str, value: Any) -> str:
    if type(value) is not str or not NAME_RE.match(value):
        raise _fail(where, f"a name is 1-63 of a-z 0-9 _ - starting with a letter or digit, "
                           f"got {value!r}")
    return value


def _int(where: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _fail(where, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _strings(where: str, value: Any, placeholders: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a table of strings, got {value!r}")
    found = []
    for key, item in value.items():
        if type(item) is not str:
            raise _fail(f"{where}.{key}", f"values are strings (quote them), got {item!r}")
        if placeholders:
            for used in re.findall(r"\{([^{}]*)\}", item):
                if used not in PLACEHOLDERS:
                    raise _fail(f"{where}.{key}", f"unknown placeholder {{{used}}} (known: "
                                                  f"{', '.join(sorted(PLACEHOLDERS))})")
        found.append((str(key), item))
    return tuple(sorted(found))


def _placement(where: str, table: dict, spread_default: bool) -> dict[str, Any]:
    spread = table.get("spread", spread_default)
    if type(spread) is not bool:
        raise _fail(f"{where}.spread", f"expected true or false, got {spread!r}")
    version = table.get("version", "")
    if type(version) is not str:
        raise _fail(f"{where}.version", f"expected a string, got {version!r}")
    return {"labels": _strings(f"{where}.labels", table.get("labels", {}), False),
            "spread": spread, "slots": _int(f"{where}.slots", table.get("slots", 1), 0, 1000),
            "version": version}


def _component(name: str, table: Any) -> list[InstanceSpec]:
    where = f"components.{name}"
    _keys(where, table, _COMPONENT_KEYS)
    run = table.get("run")
    module, sep, attr = run.rpartition(":") if type(run) is str else ("", "", "")
    if type(run) is not str or not sep or not module or not attr:
        raise _fail(f"{where}.run", f"expected MODULE:FUNC or MODULE:CLASS, got {run!r}")
    if ("instances" in table) == ("replicas" in table):
        raise _fail(where, "give instances (a component function) or replicas (a stateful "
                           "class), not both or neither")
    stateful = "replicas" in table
    if not stateful and any(k in table for k in ("partitions", "input", "output",
                                                  "replace_after")):
        raise _fail(where, "partitions, input, output and replace_after are for stateful "
                           "components (replicas = N)")
    place = _placement(where, table, spread_default=stateful)
    params = _strings(f"{where}.params", table.get("params", {}), True)
    if stateful:
        replicas = _int(f"{where}.replicas", table["replicas"], 1, 9)
        partitions = _int(f"{where}.partitions", table.get("partitions", 1), 1, 64)
        if params:
            raise _fail(f"{where}.params", "a stateful component takes no params")
        input_, output = (_name(f"{where}.{key}", table[key]) if key in table else ""
                          for key in ("input", "output"))
        replace_after = _seconds(f"{where}.replace_after", table.get("replace_after"), 10.0)
        return [InstanceSpec(id=f"{name}-r{i}", group=name, kind="stateful", index=i, run=run,
                             replicas=replicas, partitions=partitions, input=input_,
                             output=output, replace_after=replace_after, **place)
                for i in range(replicas)]
    count = _int(f"{where}.instances", table["instances"], 0, MAX_INSTANCES)
    return [InstanceSpec(id=f"{name}-{i}", group=name, kind="function", index=i, run=run,
                         params=params, **place) for i in range(count)]


def _channel(name: str, table: Any) -> list[InstanceSpec]:
    where = f"channels.{name}"
    _keys(where, table, _CHANNEL_KEYS)
    count = _int(f"{where}.intermediaries", table.get("intermediaries", 2), 0, 64)
    place = _placement(where, table, spread_default=True)
    return [InstanceSpec(id=f"{name}-i{i}", group=name, kind="intermediary", index=i,
                         channel=name, **place) for i in range(count)]


def _keys(where: str, table: Any, known: set[str]) -> dict:
    if not isinstance(table, dict):
        raise _fail(where, "expected a table")
    unknown = set(table) - known
    if unknown:
        raise _fail(where, f"unknown key {sorted(unknown)[0]!r} (known: "
                           f"{', '.join(sorted(known))})")
    return table


def _seconds(where: str, value: Any, default: float) -> float:
    value = default if value is None else value
    if type(value) not in (int, float) or not 0 < value <= 86400:
        raise _fail(where, f"expected seconds (0 < S <= 86400), got {value!r}")
    return float(value)


def _queue(name: str, table: Any) -> list[InstanceSpec]:
    where = f"queues.{name}"
    _keys(where, table, _QUEUE_KEYS)
    replicas = _int(f"{where}.replicas", table.get("replicas", 3), 1, 9)
    place = _placement(where, table, spread_default=True)
    lease = _seconds(f"{where}.lease", table.get("lease"), 10.0)
    replace_after = _seconds(f"{where}.replace_after", table.get("replace_after"), 10.0)
    return [InstanceSpec(id=f"{name}-q{i}", group=name, kind="queue", index=i, queue=name,
                         replicas=replicas, lease=lease, replace_after=replace_after, **place)
            for i in range(replicas)]


def _worker(name: str, table: Any) -> list[InstanceSpec]:
    where = f"workers.{name}"
    _keys(where, table, _WORKER_KEYS)
    run = table.get("run")
    if type(run) is not str or not run or ":" in run:
        raise _fail(f"{where}.run", f"expected a MODULE with @task functions, got {run!r}")
    queue = _name(f"{where}.queue", table.get("queue", "tasks"))
    count = _int(f"{where}.instances", table.get("instances", 1), 0, MAX_INSTANCES)
    concurrency = _int(f"{where}.concurrency", table.get("concurrency", 1), 1, 10_000)
    types = table.get("types", "")
    if type(types) is not str:
        raise _fail(f"{where}.types", f"expected \"A,B\", got {types!r}")
    place = _placement(where, table, spread_default=False)
    return [InstanceSpec(id=f"{name}-{i}", group=name, kind="worker", index=i, run=run,
                         queue=queue, concurrency=concurrency, types=types, **place)
            for i in range(count)]


def parse_network(text: str, *, name: str | None = None) -> Network:
    """Check a network file's text; :class:`ConfigError` saying where and what is wrong.

    ``name`` is used when the file has no ``name`` (``fabric deploy`` passes the file's
    stem)."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ConfigError(f"a network file is at most {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    unknown = set(data) - {"name", "components", "channels", "queues", "workers"}
    if unknown:
        raise _fail("network", f"unknown key {sorted(unknown)[0]!r} (known: name, "
                               f"components, channels, queues, workers)")
    network = _name("name", data.get("name", name))
    instances: list[InstanceSpec] = []
    sections = {"components": _component, "channels": _channel, "queues": _queue,
                "workers": _worker}
    seen: dict[str, str] = {}
    for section, make in sections.items():
        tables = data.get(section, {})
        if not isinstance(tables, dict):
            raise _fail(section, "expected a table of tables")
        for group in tables:
            _name(section, group)
            if group in seen:
                raise _fail(f"{section}.{group}", f"the name is taken by {seen[group]}.{group} "
                                                  f"(every component, channel, queue and "
                                                  f"worker of a network has its own)")
            seen[group] = section
            instances += make(group, tables[group])
    if len(instances) > MAX_NETWORK_INSTANCES:
        raise ConfigError(f"a network has at most {MAX_NETWORK_INSTANCES} instances, this "
                          f"one asks for {len(instances)}")
    stamped = tuple(_with_digest(spec) for spec in instances)
    return Network(network, text, stamped)


def _with_digest(spec: InstanceSpec) -> InstanceSpec:
    from dataclasses import replace

    return replace(spec, digest=_digest(spec))


def network_from_wire(value: bytes) -> Network:
    """A network as stored in the name service (its source text, checked again)."""
    try:
        stored = msgpack.unpackb(value, raw=False)
        source, name = stored["source"], stored["name"]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise ConfigError(f"a stored network does not decode: {exc}") from None
    if type(source) is not str or type(name) is not str:
        raise ConfigError("a stored network does not decode: bad fields")
    return parse_network(source, name=name)


def network_to_wire(network: Network) -> bytes:
    """What ``fabric deploy`` stores: the name and the source text (so every reader checks it
    with its own code, and ``fabric network status`` can show it)."""
    return msgpack.packb({"name": network.name, "source": network.source}, use_bin_type=True)
