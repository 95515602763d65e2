"""Clients of the name service: ``NameServiceClient`` (asyncio) and its synchronous twin.

    async with NameServiceClient("127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403") as ns:
        await ns.put("svc/a", "tcp://10.0.0.5:9000")
        kv = await ns.get("svc/a")
        ok = (await ns.cas("svc/a", "new", expect_value="tcp://10.0.0.5:9000")).succeeded
"""
from .api import NameServiceClient
from .channel import Channel
from .sync import SyncNameServiceClient
from .watch import Watch, WatchEvent

__all__ = ["Channel", "NameServiceClient", "SyncNameServiceClient", "Watch", "WatchEvent"]
