"""Keep a process's rules as the name service has them (``security/``): read them, then watch.

A process with keys runs :func:`follow_rules` beside its name-service client; each change
reaches :meth:`Security.set_rules`, which admits the keys allowed from then on and cuts the
connections of those revoked. A rule that does not decode is skipped with a warning (counted in
``bad_rules``), never fatal.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from nameservice.errors import Compacted, ConfigError, NameServiceError
from nameservice.security.context import Security
from nameservice.security.rules import PREFIX, REVOKED_PREFIX, Rule, decode_rule, key_of

log = logging.getLogger(__name__)

__all__ = ["follow_rules", "rules_from"]

ROOT = b"security/"
RETRY_S = 0.5


def rules_from(values: dict[bytes, bytes]) -> tuple[dict[bytes, Rule], frozenset[bytes], int]:
    """The rules, the revoked keys and the number of bad entries in ``security/`` key-values."""
    stored: dict[bytes, Rule] = {}
    revoked: set[bytes] = set()
    bad = 0
    for key, value in values.items():
        public = key_of(key)
        if public is None:
            bad += 1
        elif key.startswith(REVOKED_PREFIX):
            revoked.add(public)
        elif key.startswith(PREFIX):
            try:
                rule = decode_rule(value)
            except ConfigError as exc:
                log.warning("skipped the rule at %s: %s", key.decode(errors="replace"), exc)
                bad += 1
                continue
            if rule.key != public:
                log.warning("skipped the rule at %s: it names another key", key.decode())
                bad += 1
                continue
            stored[public] = rule
    return stored, frozenset(revoked), bad


async def follow_rules(client: Any, security: Security,
                       ready: asyncio.Event | None = None) -> None:
    """Apply the name service's rules to ``security`` until cancelled; ``ready`` is set once
    the first full set is in force. Unreachable name service: retried, the rules in force
    stay."""
    if not security.secure:
        return
    values: dict[bytes, bytes] = {}
    while True:
        try:
            kvs, revision = await client.range_revision(ROOT)
            values = {kv.key: kv.value for kv in kvs}
            _apply(security, values)
            if ready is not None:
                ready.set()
            watch = client.watch(ROOT, start_revision=revision + 1)
            try:
                async for event in watch:
                    _change(values, event)
                    while watch.queued():
                        _change(values, await watch.__anext__())
                    _apply(security, values)
            finally:
                await watch.close()
        except Compacted:
            continue
        except (NameServiceError, OSError) as exc:
            log.debug("reading the access rules failed (%s); retrying", exc)
            await asyncio.sleep(RETRY_S)


def _change(values: dict[bytes, bytes], event: Any) -> None:
    if event.kind == "delete":
        values.pop(event.kv.key, None)
    else:
        values[event.kv.key] = event.kv.value


def _apply(security: Security, values: dict[bytes, bytes]) -> None:
    security.set_rules(*rules_from(values))
