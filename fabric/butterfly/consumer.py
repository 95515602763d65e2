"""The butterfly demo's consumer (``fabric component run fabric.butterfly.consumer:main``):
counts unique ids, duplicates and redeliveries.

Parameters: ``out`` (a file: one record per delivered message — id u64, arrival time f64
(``time.time()``), intermediary number u16, redelivered u8 — written on every progress tick and
fsynced at the end). Emits the events ``ready`` once its input is open, ``progress`` (the
counts) every 100 ms and ``received`` (the counts, and the intermediary numbers' endpoints,
``vias``) when done.
"""
from __future__ import annotations

import asyncio
import os
import struct
import time

from fabric.butterfly.unique import UniqueIds

CHANNEL = "butterfly"
RECORD = struct.Struct("<QdHB")
PROGRESS_EVERY = 0.1


async def main(ctx) -> None:
    path = ctx.params["out"]
    seen = UniqueIds()  # memory bounded by the producers' windows, not by the run
    counts = {"delivered": 0, "unique": 0, "duplicates": 0, "redelivered": 0}
    vias: dict[str, int] = {}
    records = bytearray()
    pack = RECORD.pack
    now = time.time

    def handle(msg) -> None:
        ident = msg.payload
        counts["delivered"] += 1
        if seen.add(ident):
            counts["unique"] += 1
        else:
            counts["duplicates"] += 1
        if msg.redelivered:
            counts["redelivered"] += 1
        via = vias.setdefault(msg.intermediary, len(vias))
        records.extend(pack(ident, now(), via, msg.redelivered))

    with open(path, "wb") as f:
        await ctx.input(ctx.params.get("channel", CHANNEL), handle)
        ctx.event("ready")
        while not ctx.stopping.is_set():
            try:
                await asyncio.wait_for(ctx.stopping.wait(), PROGRESS_EVERY)
            except asyncio.TimeoutError:
                pass
            f.write(records)
            records.clear()
            ctx.event("progress", **counts)
        await ctx.drain()  # hand everything received to ``handle`` and acknowledge it
        f.write(records)
        f.flush()
        os.fsync(f.fileno())
    ctx.event("received", **counts, vias={v: k for k, v in vias.items()})
