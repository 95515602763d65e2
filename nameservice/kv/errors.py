"""Errors raised by the key-value state machine.

    KvError                 root of the errors only this package raises (the stale overlay's)
    DecodeError             bytes (a command, result, event or snapshot) that do not decode;
                            the only exception the codecs raise on bad input
                            (``nameservice.errors.DecodeError``, re-exported)
    Compacted               events_since(R) asked for revisions no longer in the history;
                            ``oldest`` is the first revision still available
                            (``nameservice.errors.Compacted``, re-exported)

All three sit in the project's one tree (``nameservice.errors``). Outcomes of applying a command
are *results*, never exceptions: a replica must reach the same state whatever a command
contains, so a rejected command yields a ``Rejected`` result (see ``results.RejectCode``) on
every replica alike.
"""
from __future__ import annotations

from nameservice.errors import Compacted, DecodeError, NameServiceError

__all__ = ["KvError", "DecodeError", "Compacted"]


class KvError(NameServiceError):
    """Root of the errors only the key-value state machine raises."""
