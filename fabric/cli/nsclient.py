"""Talking to the name service from a command: which nodes, and one place where every failure
becomes one line and its exit code (docs/operations.md, "Exit codes")."""
from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from fabric.cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, fail


def cluster(ns: str | None) -> list[str]:
    """The name-service nodes: ``--ns`` (or ``FABRIC_NS``), else found by zeroconf; a bad list
    exits 2, nothing found exits 1."""
    from nameservice.client.addresses import cluster_addresses
    from nameservice.errors import ConfigError, Unavailable

    try:
        return cluster_addresses(ns)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except Unavailable as exc:
        fail(str(exc), EXIT_FAILED)


def given(ns: str | None) -> list[str] | None:
    """The ``--ns`` addresses, checked (exit 2 if malformed); None when not given: the client
    then looks for the cluster itself, off the event loop."""
    from nameservice.address import parse_addresses
    from nameservice.errors import ConfigError

    if not ns:
        return None
    try:
        return parse_addresses(ns)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def run(ns: str | None, timeout: float, action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``action(client)`` with a client of the cluster and return what it returns; every
    failure exits with one line: 4 not found, 2 refused as a bad request or a bad address,
    1 anything else (unavailable, timed out, outcome unknown)."""
    import asyncio

    from nameservice import wire
    from nameservice.client.api import NameServiceClient
    from nameservice.errors import (
        ConfigError,
        FabricError,
        KeyNotFound,
        LeaseNotFound,
        NameNotFound,
        RequestRejected,
        Unavailable,
    )

    addresses = given(ns)

    async def main() -> Any:
        async with NameServiceClient(addresses, timeout=timeout,
                                     attempt_timeout=min(1.0, timeout)) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except BrokenPipeError:
        raise  # the reader went away: the group stops quietly
    except (KeyNotFound, LeaseNotFound, NameNotFound) as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except Unavailable as exc:
        fail(f"name service unavailable: {exc}", EXIT_FAILED)
    except RequestRejected as exc:
        fail(f"request refused: {exc}",
             EXIT_USAGE if exc.code == wire.ST_BAD_REQUEST else EXIT_FAILED)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except (FabricError, OSError, TimeoutError, ValueError, TypeError) as exc:
        fail(str(exc) or type(exc).__name__, EXIT_FAILED)


def run_process(ns: str | None, control: str, start: Callable[[Any, str], Awaitable[int]]
                ) -> None:
    """Run a long-lived process: ``start(names, control endpoint)`` with a client of the
    cluster; exits with its code, or with one line and 1 (2 for a bad ``--control``)."""
    import asyncio

    import zmq

    from fabric.endpoints import parse_listen
    from fabric.errors import ConfigError
    from nameservice.errors import NameServiceError
    from nameservice.storage import StorageError

    try:
        endpoint = parse_listen(control)
    except ValueError as exc:
        fail(f"--control: {exc}", EXIT_USAGE)
    addresses = cluster(ns)

    async def main() -> int:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        async with NameServiceClient(addresses) as client:
            return int(await start(Names(client), endpoint))

    try:
        code = asyncio.run(main())
    except StorageError as exc:
        fail(f"--data: {exc}", EXIT_FAILED)
    except NameServiceError as exc:
        fail(f"name service: {exc}", EXIT_FAILED)
    except (ConfigError, OSError, ValueError) as exc:
        fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    except zmq.ZMQError as exc:
        fail(f"cannot listen: {exc}", EXIT_FAILED)
    sys.exit(code)
