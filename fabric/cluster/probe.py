"""Probe components: deploy them to check what a cluster keeps (the cluster tests and
benchmarks/scale_bench.py do), each recording what it did in a file, and ``audit`` to read
the files back.

Each process writes ``OUT-rRUN.rec``, ``OUT`` its ``out`` parameter (``{data}/{instance}-g{gen}``)
and ``RUN`` how many processes of this incarnation ran before it on this host (an agent starts
an incarnation again when its process exits or was stopped by its fence).
``producer`` sends ids ``stream << 56 | index << 48 | gen << 40 | run << 32 | seq`` at ``rate``
per second and records each message sent and, every tick, how far the fabric has acknowledged;
``consumer`` records each message received. Records are written with ``os.write`` (into the
kernel at once): a process killed with SIGKILL leaves every record of what it did.
"""
from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path
from typing import Any

RECORD = struct.Struct("<BQdB")
"""kind (0 sent, 1 acknowledged below, 2 received), id or count, time.time(), redelivered."""
SENT, ACKED, RECEIVED = 0, 1, 2
CHANNEL = "jobs"
TICK = 0.01


def _open(out: str) -> tuple[int, int]:
    """The record file of this process and its run number."""
    run = 0
    while True:
        try:
            return os.open(f"{out}-r{run}.rec", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                           0o644), run
        except FileExistsError:
            run += 1


async def producer(ctx: Any) -> None:
    """Send numbered ids at ``rate`` per second on ``channel`` (default ``jobs``), recording
    each, and how far they are acknowledged, in ``OUT-rRUN.rec``."""
    index, gen = int(ctx.params["index"]), int(ctx.params["gen"])
    rate = float(ctx.params.get("rate", 100))
    fd, run = _open(ctx.params["out"])
    out = await ctx.output(ctx.params.get("channel", CHANNEL))
    first = out.next_seq
    base = int(ctx.params.get("stream", 0)) << 56 | index << 48 | gen << 40 | run << 32
    loop = asyncio.get_running_loop()
    start, sent, acked = loop.time(), 0, 0
    while not ctx.stopping.is_set():
        due = int((loop.time() - start) * rate) + 1
        while sent < due and not ctx.stopping.is_set():
            await out.send(base | sent)
            os.write(fd, RECORD.pack(SENT, base | sent, time.time(), 0))
            sent += 1
        now_acked = out.acked_below - first
        if now_acked != acked:
            acked = now_acked
            os.write(fd, RECORD.pack(ACKED, acked, time.time(), 0))
        await asyncio.sleep(TICK)
    await ctx.stopping.wait()


async def consumer(ctx: Any) -> None:
    """Record every message received on ``channel`` (default ``jobs``) in ``OUT-rRUN.rec``."""
    fd, _run = _open(ctx.params["out"])

    def handle(msg: Any) -> None:
        os.write(fd, RECORD.pack(RECEIVED, msg.payload, time.time(), int(msg.redelivered)))

    await ctx.input(ctx.params.get("channel", CHANNEL), handle)
    await ctx.stopping.wait()


def probe_network(name: str = "probe", *, producers: int = 1, consumers: int = 2,
                  intermediaries: int = 2, rate: float = 100, version: str = "1") -> str:
    """A network file of probes: ``producers`` sending ``rate`` messages a second each on
    channel ``jobs`` to ``consumers`` (their ``version``: change it for a rolling update),
    through ``intermediaries``."""
    return f"""
name = "{name}"

[components.producer]
run = "fabric.cluster.probe:producer"
instances = {producers}

[components.producer.params]
index = "{{index}}"
gen = "{{gen}}"
rate = "{rate:g}"
out = "{{data}}/{{instance}}-g{{gen}}"

[components.consumer]
run = "fabric.cluster.probe:consumer"
instances = {consumers}
version = "{version}"
params = {{ out = "{{data}}/{{instance}}-g{{gen}}" }}

[channels.{CHANNEL}]
intermediaries = {intermediaries}
"""


def read_records(root: Path) -> dict[str, list[tuple[int, int, float, int]]]:
    """Every record file under ``root`` (``*.rec``) -> its records."""
    found = {}
    for path in sorted(root.rglob("*.rec")):
        data = path.read_bytes()
        whole = len(data) - len(data) % RECORD.size
        found[str(path)] = [RECORD.unpack_from(data, i) for i in range(0, whole, RECORD.size)]
    return found


def audit(root: Path) -> dict[str, Any]:
    """What the records under ``root`` show: ``sent``, ``acked`` (ids the fabric acknowledged
    to a producer), ``received``, ``lost`` (acknowledged, never received), ``duplicates``
    (received again without the redelivered flag), ``flagged`` (received again, flagged),
    ``intervals`` (file -> first and last record time: when that incarnation acted) and
    ``two_acting`` (incarnations of one instance that acted at the same time)."""
    files = read_records(root)
    acked: set[int] = set()
    sent = 0
    receipts: list[tuple[float, int, int]] = []
    intervals: dict[str, tuple[float, float]] = {}
    for path, records in files.items():
        ids = [r[1] for r in records if r[0] == SENT]
        sent += len(ids)
        acked_below = max((r[1] for r in records if r[0] == ACKED), default=0)
        acked.update(ids[:acked_below])
        receipts += [(r[2], r[1], r[3]) for r in records if r[0] == RECEIVED]
        times = [r[2] for r in records if r[0] != ACKED]
        if times:
            intervals[path] = (min(times), max(times))
    seen: set[int] = set()
    duplicates = flagged = 0
    for _at, ident, redelivered in sorted(receipts):
        if ident in seen:
            if redelivered:
                flagged += 1
            else:
                duplicates += 1
        seen.add(ident)
    return {"sent": sent, "acked": len(acked), "received": len(seen),
            "lost": sorted(acked - seen)[:20], "lost_count": len(acked - seen),
            "duplicates": duplicates, "flagged": flagged, "intervals": intervals,
            "two_acting": two_acting(intervals)}


def two_acting(intervals: dict[str, tuple[float, float]]) -> list[tuple[str, str]]:
    """Pairs of processes of one instance (files ``INSTANCE-gGEN-rRUN.rec``) whose acting
    times overlap."""
    by_instance: dict[str, list[tuple[tuple[int, float], str]]] = {}
    for path in intervals:
        stem, _, _run = Path(path).stem.rpartition("-r")
        instance, _, gen = stem.rpartition("-g")
        by_instance.setdefault(instance, []).append(((int(gen), intervals[path][0]), path))
    found = []
    for incarnations in by_instance.values():
        incarnations.sort()
        for (_g1, older), (_g2, newer) in zip(incarnations, incarnations[1:]):
            if intervals[newer][0] < intervals[older][1]:
                found.append((older, newer))
    return found
