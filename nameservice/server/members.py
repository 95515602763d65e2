"""Membership of a running cluster: who its members are, where they listen, and changes.

Theory of operation
-------------------
The Raft configuration (``RaftCore.conf_state``) names members by id only. Where each member
listens is kept in the replicated key-value store, under ``ns/member/ID`` (value ``HOST:PORT``),
so every node, every snapshot and every watcher knows it; a node also knows the addresses it
was started with (``--cluster``, or what ``--join`` learned). The key-value entry wins over the
start-up list: it is newer.

A change (``[rid, 13, kind, node, address]``) is handled by the leader in one step: the
configuration entry is proposed (the Raft core checks the single-server rules and refuses
with a reason), then, for an addition, the put of ``ns/member/ID`` and, for a removal, its
delete — two entries appended together, persisted by the same Ready. The leader learns the
new member's address from the request at once; followers when they apply the put. The caller
is answered once both entries are applied, with the configuration that results; an entry
another leader wrote over answers NOT_LEADER, and the caller retries.

A change that can never follow from the configuration in force (adding a member, promoting a
non-learner, removing the last voter) is refused: BAD_REQUEST with the reason. One that cannot
be made *yet* — the learner is not caught up, the previous change or this leader's first
entry is not committed, a leadership transfer runs — is answered BUSY with the reason: clients
retry BUSY until their deadline, so a promotion simply waits for the learner to catch up.

Retries are safe: a change already in force (the node is a learner at that address, a voter,
or not a member) is answered OK at once without a new entry. A member already listed at
another address is refused: remove it first.

``MemberBook`` is the address book; ``MembershipService`` answers MEMBERS and MEMBER_CHANGE.
"""
from __future__ import annotations

import logging
from typing import Callable

from nameservice import wire
from nameservice.address import parse_member
from nameservice.kv import KvStateMachine
from nameservice.kv.codec import encode_command
from nameservice.kv.commands import Delete, Put
from nameservice.raft.core import RaftCore
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.membership import apply_change
from nameservice.raft.types import ChangeKind, ConfChange, Role
from nameservice.server.seam import Reply

log = logging.getLogger(__name__)

__all__ = ["MEMBER_PREFIX", "MAX_WAITING", "MemberBook", "MembershipService", "member_key"]

MEMBER_PREFIX = b"ns/member/"
"""Where members' addresses are kept in the key-value store (``ns/member/ID``)."""
MAX_WAITING = 64
"""Membership changes waiting to be applied; beyond, new ones are answered BUSY."""


def member_key(node: int) -> bytes:
    """The key holding where ``node`` listens."""
    return MEMBER_PREFIX + str(node).encode()


class MemberBook:
    """Where each node listens: the start-up list, overlaid by ``ns/member/ID`` keys and by
    the additions this node proposed as leader (``note``)."""

    def __init__(self, machine: KvStateMachine, start: dict[int, str]) -> None:
        self._machine = machine
        self._start = dict(start)
        self._noted: dict[int, str] = {}

    def note(self, node: int, address: str) -> None:
        """``node`` listens at ``address`` (a change this node proposed, not applied yet)."""
        self._noted[node] = address

    def addresses(self) -> dict[int, str]:
        """Every address known, id -> ``HOST:PORT``."""
        out = dict(self._start)
        out.update(self._noted)
        for kv in self._machine.range(MEMBER_PREFIX):
            suffix = kv.key[len(MEMBER_PREFIX):]
            if suffix.isdigit():
                try:
                    out[int(suffix)] = kv.value.decode()
                except UnicodeDecodeError:
                    continue  # not ours to interpret: a client wrote it
        return out

    def address(self, node: int) -> str | None:
        """Where ``node`` listens, if known."""
        kv = self._machine.get(member_key(node))
        if kv is not None:
            try:
                return kv.value.decode()
            except UnicodeDecodeError:
                pass
        return self._noted.get(node) or self._start.get(node)


class MembershipService:
    """Answers MEMBERS (any node) and MEMBER_CHANGE (the leader); see the module docstring."""

    def __init__(self, core: RaftCore, book: MemberBook, reply: Reply, *,
                 applied_index: Callable[[], int]) -> None:
        self._core = core
        self._book = book
        self._reply = reply
        self._applied_index = applied_index
        # (last index proposed, term, the configuration entry's index, identity, rid)
        self._waiting: list[tuple[int, int, int, bytes, int]] = []
        self.counters = {"member_changes": 0, "member_changes_refused": 0,
                         "member_changes_deferred": 0}

    def members(self) -> dict:
        """The MEMBERS payload: the configuration in force here, each member's address and,
        on the leader, how far each follower's log matches."""
        core = self._core
        state = core.conf_state
        addresses = self._book.addresses()
        leading = core.role is Role.LEADER
        last = core.last_index
        rows = []
        for role, ids in (("voter", state.voters), ("learner", state.learners)):
            for node in ids:
                row: dict = {"id": node, "address": addresses.get(node, ""), "role": role}
                if leading:
                    match = last if node == core.id else core.progress[node].match
                    row["match"] = match
                    row["lag"] = last - match
                rows.append(row)
        newest = core.conf.last_index  # the newest configuration entry, 0 if none in the log
        return {"members": rows, "id": core.id, "leader": core.leader, "term": core.term,
                "pending_change": newest if newest > core.commit_index else 0}

    def change(self, identity: bytes, rid: int, w: list) -> None:
        """Handle a MEMBER_CHANGE on the leader (the caller checked that it leads)."""
        try:
            kind, node, address = wire.member_change_args(w)
            if kind is ChangeKind.ADD_LEARNER:
                parse_member(address)
        except (wire.DecodeError, ValueError) as exc:
            self._refuse(identity, rid, str(exc))
            return
        core = self._core
        state = core.conf_state
        known = self._book.address(node)
        if kind is ChangeKind.ADD_LEARNER and node in state.voters + state.learners:
            if known == address:
                self._reply(identity, rid, wire.ST_OK, self.members())
            else:
                self._refuse(identity, rid, f"node {node} is already a member, at {known}; "
                                            f"remove it first")
            return
        if (kind is ChangeKind.PROMOTE and node in state.voters
                or kind is ChangeKind.REMOVE and node not in state.voters + state.learners):
            self._reply(identity, rid, wire.ST_OK, self.members())  # in force already
            return
        change = ConfChange(kind, node)
        try:
            apply_change(state, change)
        except ValueError as exc:  # never possible from this configuration
            self._refuse(identity, rid, str(exc))
            return
        if len(self._waiting) >= MAX_WAITING:
            self._reply(identity, rid, wire.ST_BUSY, "too many membership changes waiting")
            return
        try:
            index = core.propose_conf_change(change)
        except NotLeader:
            self._reply(identity, rid, wire.ST_NOT_LEADER, None)
            return
        except ProposalDropped as exc:
            # Not now (a learner behind, a change or this term's first entry uncommitted, a
            # leadership transfer): BUSY, which clients retry until their deadline.
            self.counters["member_changes_deferred"] += 1
            self._reply(identity, rid, wire.ST_BUSY, f"not yet: {exc}")
            return
        last = index
        if kind is ChangeKind.ADD_LEARNER:
            self._book.note(node, address)
            last = self._propose(Put(member_key(node), address.encode()), index)
        elif kind is ChangeKind.REMOVE:
            last = self._propose(Delete(member_key(node)), index)
        self.counters["member_changes"] += 1
        log.info("membership change proposed at index %d: %s node %d%s", index,
                 kind.name.lower(), node, f" at {address}" if address else "")
        self._waiting.append((last, core.term, index, identity, rid))

    def _propose(self, command: Put | Delete, after: int) -> int:
        try:
            return self._core.propose(encode_command(command))
        except (NotLeader, ProposalDropped) as exc:
            # The configuration entry is in; its address key is not. The address book falls
            # back on what this node knows; a retry of the change writes it.
            log.warning("member address not recorded after index %d: %s", after, exc)
            return after

    def _refuse(self, identity: bytes, rid: int, reason: str) -> None:
        self.counters["member_changes_refused"] += 1
        self._reply(identity, rid, wire.ST_BAD_REQUEST, reason)

    def on_applied(self) -> None:
        """Answer the changes whose entries are now applied."""
        if not self._waiting:
            return
        applied = self._applied_index()
        log_ = self._core.log
        still = []
        for item in self._waiting:
            last, term, index, identity, rid = item
            if last > applied:
                still.append(item)
            elif log_.term(index) == term:
                self._reply(identity, rid, wire.ST_OK, self.members())
            else:  # written over by another leader (or compacted away: it is not ours to say)
                self._reply(identity, rid, wire.ST_NOT_LEADER, None)
        self._waiting = still

    def fail_all(self, leader_address: str | None) -> None:
        """This node stopped leading: every waiting change is answered NOT_LEADER."""
        for _, _, _, identity, rid in self._waiting:
            self._reply(identity, rid, wire.ST_NOT_LEADER, leader_address)
        self._waiting = []
