"""Rebuilding the stored state from what is on disk: replay the segments, then reconcile the
log with the snapshot and the hard state. Pure: bytes already read, no I/O here."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from ..raft.types import HardState, Snapshot
from .codec import OP_ENTRIES, OP_RESET, SegmentScan
from .errors import CorruptLogError, InvalidWriteError, RecoveryError
from .log import LogState, StoredState

log = logging.getLogger(__name__)


class Replayed(NamedTuple):
    """The log as the segment records leave it, before looking at the snapshot."""

    log: LogState | None          # None: no entries and no reset in any segment
    base_term_known: bool         # False: the base is just "before the first surviving entry"
    commit: int                   # highest commit index recorded in the log
    segment_max_index: list[int]  # per segment: highest index it mentions (for compaction)


def replay(segments: Sequence[tuple[str, SegmentScan]]) -> Replayed:
    """Apply every operation of every segment in order; CorruptLogError on a gap."""
    state: LogState | None = None
    base_term_known = False
    commit = 0
    maxima = []
    for path, scan in segments:
        highest = 0
        for offset, ops in scan.records:
            for op in ops:
                if op.kind == OP_ENTRIES:
                    assert op.entries is not None
                    if state is None or op.index <= state.base_index:
                        # The first surviving record, or one that rewrote entries whose records
                        # compaction deleted: those entries were below the snapshot that caused
                        # the deletion, so the log restarts here and ``reconcile`` checks that
                        # the snapshot covers everything before it.
                        state = LogState(op.index - 1, 0)
                        base_term_known = False
                    try:
                        state.append(op.entries)
                    except InvalidWriteError as exc:
                        raise CorruptLogError(path, offset, f"entries do not continue the log: "
                                                            f"{exc}") from None
                    highest = max(highest, op.entries[-1].index)
                elif op.kind == OP_RESET:
                    state = LogState(op.index, op.term)
                    base_term_known = True
                    highest = max(highest, op.index)
                else:
                    commit = max(commit, op.index)
        maxima.append(highest)
    return Replayed(state, base_term_known, commit, maxima)


def reconcile(replayed: Replayed, snapshot: Snapshot, hard_state: HardState,
              where: str) -> tuple[StoredState, bool]:
    """Fit the replayed log to the snapshot; returns the state and whether the log was reset.

    A reset (the log does not contain the snapshot's entry) is legitimate only after a crash
    during ``install_snapshot``; the caller must then record it on disk before appending.
    RecoveryError when the pieces cannot be fitted without losing committed entries.
    """
    index, term = snapshot.meta.index, snapshot.meta.term
    commit = max(hard_state.commit, replayed.commit)
    state = replayed.log
    reset = False
    if state is not None and state.base_index > index:
        raise RecoveryError(
            f"{where}: the log starts at index {state.base_index + 1} but the snapshot covers only "
            f"up to index {index}: entries {index + 1}..{state.base_index} are missing")
    if state is None:
        state = LogState(index, term)
    elif state.last_index < index:
        log.info("%s: snapshot at %d covers the whole log (last entry %d)",
                 where, index, state.last_index)
        state.reset(index, term)
        reset = True
    else:
        found = state.term(index)
        if found == term or (index == state.base_index and not replayed.base_term_known):
            state.compact(index, term)
        else:
            if commit >= index:
                raise RecoveryError(
                    f"{where}: the snapshot says entry {index} has term {term}, but the log has "
                    f"term {found} there and the entry is committed (commit index {commit})")
            log.warning("%s: log entries %d..%d conflict with the snapshot at (index %d, term %d)"
                        " and are dropped, as the install of that snapshot had begun to",
                        where, index, state.last_index, index, term)
            state.reset(index, term)
            reset = True
    commit = max(commit, index)
    if commit > state.last_index:
        raise RecoveryError(
            f"{where}: the commit index {commit} is beyond the last log entry "
            f"{state.last_index}: synced entries are missing")
    return StoredState(hard_state._replace(commit=commit), snapshot, state), reset
