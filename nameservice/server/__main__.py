"""``python -m nameservice.server --id ID --cluster ID=HOST:PORT,... --data-dir DIR``: one node."""
from __future__ import annotations

import argparse
import sys

from nameservice.errors import ConfigError
from nameservice.server.config import NodeSettings, parse_cluster, parse_timeout_range
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
    args = parser.parse_args(argv)
    try:
        settings = NodeSettings(args.id, parse_cluster(args.cluster), args.data_dir,
                                parse_timeout_range(args.election_timeout),
                                snapshot_threshold=args.snapshot_threshold,
                                sync_mode=args.sync_mode, history_events=args.history_events)
    except ConfigError as exc:
        print(f"fabric ns: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
