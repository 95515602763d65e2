"""The butterfly demo's producer (``fabric component run fabric.butterfly.producer:main``):
numbered, unique ids.

Parameters (``--param KEY=VALUE``): ``index`` (this producer's number, 0-255), ``messages``
(how many to send; 0: until stopped), ``rate`` (messages per second; 0: as fast as the
window allows). Having sent them all, it waits to be stopped (SIGTERM or
``fabric drain``). Message ids are ``index << 40 | i`` for i = 0, 1, 2, ...; so the ids sent are
known from the count alone. Emits the event ``sent`` (``index``, ``count``) when stopped.
"""
from __future__ import annotations

import asyncio

CHANNEL = "butterfly"
TICK = 0.005  # pacing granularity, seconds


async def main(ctx) -> None:
    index = int(ctx.params.get("index", 0))
    limit = int(ctx.params.get("messages", 0))
    rate = float(ctx.params.get("rate", 0))
    out = await ctx.output(ctx.params.get("channel", CHANNEL))
    base = index << 40
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while not ctx.stopping.is_set() and (limit == 0 or sent < limit):
        if rate:
            due = int((loop.time() - start) * rate) + 1
            if due <= sent:
                await asyncio.sleep(TICK)
                continue
        else:
            due = sent + 1000
        due = min(due, limit) if limit else due
        while sent < due:
            await out.send(base | sent)
            sent += 1
        await asyncio.sleep(0)
    await ctx.stopping.wait()  # stay until drained, so the demo drains every process
    ctx.event("sent", index=index, count=sent)
