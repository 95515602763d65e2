"""A producer that routes by key (``fabric component run tests.stateful.keyed:main``): sends
``messages`` integers 0.. with key ``i % keys``, then waits to be stopped."""
from __future__ import annotations


async def main(ctx) -> None:
    out = await ctx.output(ctx.params["channel"])
    keys = int(ctx.params.get("keys", 100))
    for i in range(int(ctx.params["messages"])):
        await out.send(i, key=i % keys)
    ctx.event("sent", partitions=getattr(out, "partitions", 1))
    await ctx.stopping.wait()
