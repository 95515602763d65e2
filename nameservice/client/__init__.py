"""Clients of the name service: ``NameServiceClient`` (asyncio) and its synchronous twin.

    async with NameServiceClient("127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403") as ns:
        await ns.put("svc/a", "tcp://10.0.0.5:9000")
        kv = await ns.get("svc/a")
        ok = (await ns.cas("svc/a", "new", expect_value="tcp://10.0.0.5:9000")).succeeded
        async with ns.keep_alive(2.0) as lease:            # a lease renewed in the background
            await ns.put("names/svc/a", "tcp://10.0.0.5:9000", lease=lease.id)
        await ns.put("conf/x", "1", consistent=False)      # accepted even without a quorum
        async for event in ns.watch("svc/"):               # every change, in revision order
            print(event.revision, event.kind, event.kv.key)

``NameServiceClient(None)`` finds the cluster itself: ``$FABRIC_NS``, else zeroconf browsing
(``nameservice.client.addresses``).
"""
from .addresses import cluster_addresses
from .api import NameServiceClient
from .channel import Channel
from .leases import LeaseKeeper
from .sync import SyncLeaseKeeper, SyncNameServiceClient
from .watch import Watch, WatchEvent

__all__ = ["Channel", "LeaseKeeper", "NameServiceClient", "SyncLeaseKeeper",
           "SyncNameServiceClient", "Watch", "WatchEvent", "cluster_addresses"]
