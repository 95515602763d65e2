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
(``nameservice.client.addresses``). The names below are imported on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nameservice.lazy import lazy_exports

_EXPORTS = {
    "Channel": "nameservice.client.channel",
    "LeaseKeeper": "nameservice.client.leases",
    "Mirror": "nameservice.client.mirror",
    "NameServiceClient": "nameservice.client.api",
    "SyncLeaseKeeper": "nameservice.client.sync",
    "SyncNameServiceClient": "nameservice.client.sync",
    "Watch": "nameservice.client.watch",
    "WatchEvent": "nameservice.client.watch",
    "cluster_addresses": "nameservice.client.addresses",
}
__all__ = ["Channel", "LeaseKeeper", "Mirror", "NameServiceClient", "SyncLeaseKeeper",
           "SyncNameServiceClient", "Watch", "WatchEvent", "cluster_addresses"]

if TYPE_CHECKING:
    from nameservice.client.addresses import cluster_addresses
    from nameservice.client.api import NameServiceClient
    from nameservice.client.channel import Channel
    from nameservice.client.leases import LeaseKeeper
    from nameservice.client.mirror import Mirror
    from nameservice.client.sync import SyncLeaseKeeper, SyncNameServiceClient
    from nameservice.client.watch import Watch, WatchEvent

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
