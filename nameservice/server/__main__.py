"""``python -m nameservice.server --id ID --cluster ID=HOST:PORT,... --data-dir DIR``: one node."""
from __future__ import annotations

import argparse
import sys

from nameservice.address import parse_cluster, parse_control
from nameservice.errors import ConfigError
from nameservice.server.config import NodeSettings, parse_min_lease_ttl, parse_timeout_range
from nameservice.server.daemon import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nameservice.server")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--election-timeout", default="150-300")
    parser.add_argument("--snapshot-threshold", type=int, default=10_000)
    parser.add_argument("--sync-mode", choices=("thread", "inline", "auto"), default="auto",
                        help="where fsync runs (auto: the leader in a thread, followers inline)")
    parser.add_argument("--history-events", type=int, default=10_000,
                        help="events kept for watches resuming from an older revision")
    parser.add_argument("--min-lease-ttl", type=float, default=1.0, metavar="SECONDS",
                        help="shortest lease TTL granted (at least 0.5; same on every node)")
    parser.add_argument("--cluster-name", default="default",
                        help="the cluster name advertised with zeroconf")
    parser.add_argument("--no-advertise", action="store_true",
                        help="do not advertise this node with zeroconf")
    parser.add_argument("--name", default="",
                        help="the node's process name, registered as process/NAME "
                             "(default: ns-ID)")
    parser.add_argument("--control", default="", metavar="HOST:PORT",
                        help="where the control socket binds; port 0 for any "
                             "(default: the node's host, any port)")
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics; port 0 for "
                             "any (default: $FABRIC_METRICS, else none)")
    args = parser.parse_args(argv)
    try:
        if args.metrics:
            parse_control(args.metrics)
        settings = NodeSettings(args.id, parse_cluster(args.cluster), args.data_dir,
                                parse_timeout_range(args.election_timeout),
                                snapshot_threshold=args.snapshot_threshold,
                                sync_mode=args.sync_mode,
                                min_lease_ttl_ms=parse_min_lease_ttl(args.min_lease_ttl),
                                cluster_name=args.cluster_name,
                                advertise=not args.no_advertise,
                                history_events=args.history_events,
                                name=args.name, control=args.control)
    except ConfigError as exc:
        print(f"fabric ns: {exc}", file=sys.stderr)
        return 2
    return serve(settings, metrics=args.metrics)


if __name__ == "__main__":
    sys.exit(main())
