"""Errors raised by the key-value state machine.

Exception tree::

    KvError                 root of every error this package raises
    ├── DecodeError         bytes (a command, result, event or snapshot) that do not decode;
    │                       the only exception the codecs raise on bad input
    └── Compacted           events_since(R) asked for revisions no longer in the history;
                            ``oldest`` is the first revision still available

Outcomes of applying a command are *results*, never exceptions: a replica must reach the same
state whatever a command contains, so a rejected command yields a ``Rejected`` result (see
``results.RejectCode``) on every replica alike.
"""
from __future__ import annotations

__all__ = ["KvError", "DecodeError", "Compacted"]


class KvError(Exception):
    """Root of the errors of the key-value state machine."""


class DecodeError(KvError):
    """Bytes that are not a valid encoding (garbage, wrong version, wrong shape, out of bounds)."""


class Compacted(KvError):
    """The requested revision is older than the event history; resync from a full range.

    ``oldest`` is the oldest revision that ``events_since`` can still serve; a watcher that
    needs anything before it must reload the state with ``range`` and resume from the
    revision of that range plus one.
    """

    def __init__(self, oldest: int) -> None:
        super().__init__(f"revisions before {oldest} are compacted; resync from a full range")
        self.oldest = oldest
