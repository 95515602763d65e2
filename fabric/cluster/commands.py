"""The command line an agent runs for an instance: ``fabric component run`` for components
and stateful replicas, ``fabric intermediary`` for a channel's intermediaries, ``fabric queue
run`` and ``fabric worker run`` for a task queue's replicas and workers."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Where", "instance_argv", "process_name", "substitute"]


@dataclass(frozen=True)
class Where:
    """What the agent knows of its host: its name, the address its processes listen on,
    the name service's ``--ns`` and the instance's data directory."""

    host: str
    address: str
    ns: str
    data: str


def process_name(network: str, spec: dict[str, Any]) -> str | None:
    """The name the process registers (``process/<name>``): ``NET.ID``, or ``NET.GROUP`` for
    a stateful replica (its group's replicas share the name and find each other by it); None
    for a queue's replica, which registers under its queue (``queue-NAME-PID``)."""
    kind = spec.get("kind")
    if kind == "stateful":
        return f"{network}.{spec['group']}"
    if kind == "queue":
        return None
    return f"{network}.{spec['id']}"


def substitute(value: str, fields: dict[str, str]) -> str:
    """``{network}``, ``{instance}``, ... replaced (the file was checked: no other names)."""
    return re.sub(r"\{([a-z]+)\}", lambda m: fields.get(m.group(1), m.group(0)), value)


def instance_argv(network: str, spec: dict[str, Any], gen: int, where: Where
                  ) -> list[str]:
    """The argv of one incarnation of an instance (``spec`` as in a placement)."""
    fabric = [sys.executable, "-m", "fabric"]
    kind = spec.get("kind")
    tail = ["--ns", where.ns, "--control", f"{where.address}:0", "--events"]
    if kind == "queue":
        return [*fabric, "queue", "run", "--name", str(spec["queue"]),
                "--replicas", str(spec["replicas"]), "--data", where.data,
                "--listen-host", where.address, "--lease", str(spec.get("lease") or 10.0),
                "--replace-after", str(spec.get("replace_after") or 10.0), *tail]
    name = str(process_name(network, spec))
    common = ["--name", name, *tail]
    if kind == "worker":
        argv = [*fabric, "worker", "run", str(spec["run"]), "--queue", str(spec["queue"]),
                "--concurrency", str(spec.get("concurrency") or 1), *common]
        return argv + (["--types", str(spec["types"])] if spec.get("types") else [])
    if kind == "intermediary":
        return [*fabric, "intermediary", "--channel", str(spec["channel"]),
                "--listen", f"{where.address}:0", *common]
    if kind == "stateful":
        argv = [*fabric, "component", "run", str(spec["run"]), *common,
                "--replicas", str(spec["replicas"]), "--data", where.data,
                "--partitions", str(spec.get("partitions", 1)),
                "--listen-host", where.address,
                "--replace-after", str(spec.get("replace_after") or 10.0)]
        for key in ("input", "output"):
            if spec.get(key):
                argv += [f"--{key}", str(spec[key])]
        return argv
    fields = {"network": network, "instance": str(spec["id"]), "index": str(spec["index"]),
              "gen": str(gen), "host": where.host, "data": where.data}
    argv = [*fabric, "component", "run", str(spec["run"]), *common]
    for key, value in sorted(spec.get("params", {}).items()):
        argv += ["--param", f"{key}={substitute(str(value), fields)}"]
    return argv
