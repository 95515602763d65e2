"""``python -m nameservice.server --id ID --cluster ID=HOST:PORT,...``: one node.

A thin alias of ``fabric ns start``: the same options (defined once, in
``nameservice/server/cli.py``), for running a node where only the name service is wanted.
"""
from __future__ import annotations

import sys

from nameservice.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
