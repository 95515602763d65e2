"""Applies commands to a state machine the way the server does: encoded, one log entry each."""
from __future__ import annotations

from nameservice.kv import (
    Applied,
    KvConfig,
    KvStateMachine,
    OpenSession,
    Proposal,
    Result,
    encode_command,
)


class Driver:
    """A state machine fed through the codec with consecutive log indexes."""

    def __init__(self, config: KvConfig | None = None) -> None:
        self.machine = KvStateMachine(config)

    def entry(self, proposal: Proposal) -> Applied:
        """Append ``proposal`` as the next log entry and apply it."""
        data = encode_command(proposal)
        return self.machine.apply_entry(self.machine.applied_index + 1, data)

    def do(self, proposal: Proposal) -> Result:
        """Apply one command or request; its single result."""
        applied = self.entry(proposal)
        assert len(applied.results) == 1
        return applied.results[0]

    def session(self) -> int:
        """Open a session; its client id."""
        return self.do(OpenSession()).client_id
