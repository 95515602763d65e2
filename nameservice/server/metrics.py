"""A name-service node's metrics (``fabric_ns_*``), read from its parts when scraped.

``NODE_METRICS`` is the table (docs/operations.md, "Metrics", lists the same, and a test keeps
the two equal); ``node_samples(node)`` reads the current values: the counters each part keeps
(``RequestIntake``, ``WriteBatcher``, ``ReadyPipeline``, ``SnapshotStreams``, the transport,
the Raft core, the ``WatchHub``, ``StaleWrites``, ``LeaseClock``), the core's role, term and
indexes, the state machine's sizes, and the parts' histograms. ``NodeCollector(node)`` serves them.

Counters are the node process's own: they start at 0 when it starts (Prometheus's ``rate``
and ``increase`` handle the reset).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nameservice.metrics import Metric, Sample, TableCollector
from nameservice.raft.types import NONE, Role
from nameservice.server.watches import MAX_WATCHES

__all__ = ["NODE_METRICS", "NodeCollector", "node_samples"]

_C, _G, _H = "counter", "gauge", "histogram"

NODE_METRICS: tuple[Metric, ...] = (
    # -- state
    Metric("fabric_ns_node_info", _G, "Always 1: the node's id and process name.",
           ("id", "name")),
    Metric("fabric_ns_role", _G, "1 for the node's current Raft role, 0 for the others.",
           ("role",)),
    Metric("fabric_ns_leader_known", _G, "1 while the node knows a leader (itself included)."),
    Metric("fabric_ns_term", _G, "The node's current Raft term."),
    Metric("fabric_ns_commit_index", _G, "Index of the last log entry known committed."),
    Metric("fabric_ns_applied_index", _G, "Index of the last entry applied to the key-value "
                                          "state."),
    Metric("fabric_ns_last_index", _G, "Index of the last entry in the node's log."),
    Metric("fabric_ns_members", _G, "Members of the configuration in force here, by role.",
           ("role",)),
    Metric("fabric_ns_member_lag_entries", _G, "How many entries each member's log is behind "
           "the leader's (the leader only).", ("member",)),
    Metric("fabric_ns_revision", _G, "The key-value state's revision."),
    Metric("fabric_ns_keys", _G, "Keys in the key-value state."),
    Metric("fabric_ns_leases", _G, "Leases in the key-value state."),
    Metric("fabric_ns_sessions", _G, "Client sessions in the key-value state."),
    Metric("fabric_ns_watches", _G, "Watches this node serves."),
    Metric("fabric_ns_watches_max", _G, "Watches one node serves at most (beyond, WATCH is "
                                        "refused)."),
    Metric("fabric_ns_parked_requests", _G, "Requests held while no leader is known."),
    Metric("fabric_ns_pending_writes", _G, "Writes collected or proposed, not yet answered."),
    Metric("fabric_ns_pending_reads", _G, "Consistent reads waiting for their read index or "
                                          "for the state machine."),
    Metric("fabric_ns_stale_writes_pending", _G, "Quorum-less writes kept here, not yet "
                                                 "replicated."),
    # -- counters
    Metric("fabric_ns_writes_total", _C, "Writes the leader accepted into a batch."),
    Metric("fabric_ns_reads_total", _C, "GET and RANGE requests (consistent and stale)."),
    Metric("fabric_ns_busy_total", _C, "Requests answered BUSY (too many pending)."),
    Metric("fabric_ns_bad_frames_total", _C, "Frames dropped because they did not decode.",
           ("source",)),
    Metric("fabric_ns_bad_requests_total", _C, "Requests answered BAD_REQUEST or dropped."),
    Metric("fabric_ns_forbidden_total", _C, "Refused for the sender's rights (with keys): "
           "requests answered FORBIDDEN, peer frames from keys that are not an ns-peer's.",
           ("kind",)),
    Metric("fabric_ns_entries_proposed_total", _C, "Log entries proposed by this node (each a "
                                                   "batch of writes)."),
    Metric("fabric_ns_readies_total", _C, "Raft Readies handled."),
    Metric("fabric_ns_fsyncs_total", _C, "Log syncs (fsync) started."),
    Metric("fabric_ns_snapshots_total", _C, "Snapshots taken (and the log compacted)."),
    Metric("fabric_ns_snapshots_installed_total", _C, "Snapshots received from a leader and "
                                                      "installed."),
    Metric("fabric_ns_snapshot_chunks_total", _C, "Chunks of streamed snapshots: sent, resent "
           "(leader); received, refused (bad CRC), dropped (out of order or stale) (follower).",
           ("event",)),
    Metric("fabric_ns_snapshot_streams_total", _C, "Snapshot streams to followers: started, "
           "resumed (from bytes the follower held), completed, expired (receiver silent).",
           ("event",)),
    Metric("fabric_ns_snapshot_receives_total", _C, "Snapshot streams received: started, "
           "resumed, completed, corrupt (the whole image failed its CRC).", ("event",)),
    Metric("fabric_ns_snapshot_bytes_total", _C, "Bytes of streamed snapshots: sent, skipped "
           "(held by the follower already), received.", ("direction",)),
    Metric("fabric_ns_peer_send_drops_total", _C, "Raft messages to a peer dropped (its queue "
                                                  "was full)."),
    Metric("fabric_ns_reply_drops_total", _C, "Replies to a client dropped (its queue was "
                                              "full)."),
    Metric("fabric_ns_raft_messages_dropped_total", _C, "Raft messages the core ignored.",
           ("reason",)),
    Metric("fabric_ns_watches_created_total", _C, "Watches created."),
    Metric("fabric_ns_watches_cancelled_total", _C, "Watches ended (by the client or by the "
                                                    "node)."),
    Metric("fabric_ns_watch_events_total", _C, "Events pushed to watches."),
    Metric("fabric_ns_watch_overflows_total", _C, "Pushes lost to a client's full queue (its "
                                                  "watches cancelled)."),
    Metric("fabric_ns_watch_clients_gone_total", _C, "Watching clients that disconnected."),
    Metric("fabric_ns_watches_refused_total", _C, "WATCH requests refused at a limit."),
    Metric("fabric_ns_lease_expiries_total", _C, "Leases the leader found run out and "
                                                 "proposed to expire."),
    Metric("fabric_ns_sessions_evicted_total", _C, "Client sessions evicted from the state."),
    Metric("fabric_ns_quota_refusals_total", _C, "Requests refused at a client's quota: "
                                                 "watches, leases (per session), sessions.",
           ("quota",)),
    Metric("fabric_ns_member_changes_total", _C, "Membership changes asked of this node as "
           "leader: proposed, refused (never possible), deferred (not yet: BUSY).",
           ("outcome",)),
    Metric("fabric_ns_replies_limited_total", _C, "Reads refused for their reply's size: "
           "over_budget (the frame's replies passed 7 MiB; BUSY), too_large (one reply would).",
           ("reason",)),
    Metric("fabric_ns_stale_writes_refused_total", _C, "Quorum-less writes refused (backlog "
                                                       "full)."),
    Metric("fabric_ns_stale_conflicts_total", _C, "Quorum-less writes dropped in conflict "
                                                  "when replayed."),
    Metric("fabric_ns_stale_persist_failures_total", _C, "Failed writes of the quorum-less "
                                                         "writes' file."),
    Metric("fabric_ns_stale_replay_rounds_total", _C, "Rounds replaying quorum-less writes "
                                                      "through the leader."),
    # -- histograms
    Metric("fabric_ns_request_duration_seconds", _H,
           "From a request's arrival to its answer: write (leader), read (consistent), "
           "stale_write.", ("op",)),
    Metric("fabric_ns_commit_duration_seconds", _H, "From an entry's proposal to its being "
                                                    "applied (leader)."),
    Metric("fabric_ns_fsync_duration_seconds", _H, "Duration of each log sync (fsync)."),
    Metric("fabric_ns_read_index_wait_seconds", _H, "From asking for a read index to its "
                                                    "confirmation by a quorum."),
)

_ROLES = tuple(role.value for role in Role)


def node_samples(node: Any) -> Iterator[Sample]:
    """The current values of ``NODE_METRICS`` for ``node`` (a ``Node``)."""
    core, machine, settings = node.core, node.machine, node.settings
    yield "fabric_ns_node_info", (str(settings.id), settings.name or f"ns-{settings.id}"), 1
    role = core.role.value
    for name in _ROLES:
        yield "fabric_ns_role", (name,), 1 if name == role else 0
    yield "fabric_ns_leader_known", (), 1 if core.leader != NONE else 0
    yield "fabric_ns_term", (), core.term
    yield "fabric_ns_commit_index", (), core.commit_index
    yield "fabric_ns_applied_index", (), machine.applied_index
    yield "fabric_ns_last_index", (), core.last_index
    conf = core.conf_state
    yield "fabric_ns_members", ("voter",), len(conf.voters)
    yield "fabric_ns_members", ("learner",), len(conf.learners)
    if core.role is Role.LEADER:
        last = core.last_index
        for peer, progress in core.progress.items():
            yield "fabric_ns_member_lag_entries", (str(peer),), last - progress.match
    stats = machine.stats()
    yield "fabric_ns_revision", (), stats["revision"]
    yield "fabric_ns_keys", (), stats["keys"]
    yield "fabric_ns_leases", (), stats["leases"]
    yield "fabric_ns_sessions", (), stats["sessions"]
    yield "fabric_ns_watches", (), len(node.watches)
    yield "fabric_ns_watches_max", (), MAX_WATCHES
    yield "fabric_ns_parked_requests", (), node.intake.parked
    yield "fabric_ns_pending_writes", (), node.writes.pending
    yield "fabric_ns_pending_reads", (), node.reads.pending
    yield "fabric_ns_stale_writes_pending", (), len(node.stale.overlay)

    counters = node.counters
    yield "fabric_ns_writes_total", (), counters["writes"]
    yield "fabric_ns_reads_total", (), counters["reads"]
    yield "fabric_ns_busy_total", (), counters["busy"]
    yield "fabric_ns_bad_frames_total", ("peer",), counters["bad_peer_frames"]
    yield "fabric_ns_bad_frames_total", ("client",), counters["bad_client_frames"]
    yield "fabric_ns_bad_requests_total", (), counters["bad_requests"]
    guard = node.intake.guard.counters if node.intake.guard is not None else {}
    yield "fabric_ns_forbidden_total", ("request",), guard.get("forbidden_requests", 0)
    yield "fabric_ns_forbidden_total", ("peer_frame",), guard.get("forbidden_peer_frames", 0)
    yield "fabric_ns_entries_proposed_total", (), counters["entries_proposed"]
    yield "fabric_ns_readies_total", (), counters["readies"]
    yield "fabric_ns_fsyncs_total", (), counters["syncs"]
    yield "fabric_ns_snapshots_total", (), counters["snapshots"]
    yield "fabric_ns_snapshots_installed_total", (), counters["snapshots_installed"]
    for event in ("sent", "resent", "received", "refused", "dropped"):
        yield "fabric_ns_snapshot_chunks_total", (event,), counters[f"snapshot_chunks_{event}"]
    for event in ("started", "resumed", "completed", "expired"):
        yield "fabric_ns_snapshot_streams_total", (event,), counters[f"snapshot_streams_{event}"]
    for event in ("started", "resumed", "completed", "corrupt"):
        yield ("fabric_ns_snapshot_receives_total", (event,),
               counters[f"snapshot_receives_{event}"])
    for direction in ("sent", "skipped", "received"):
        yield ("fabric_ns_snapshot_bytes_total", (direction,),
               counters[f"snapshot_bytes_{direction}"])
    transport = node.transport
    yield "fabric_ns_peer_send_drops_total", (), getattr(transport, "peer_drops", 0)
    yield "fabric_ns_reply_drops_total", (), getattr(transport, "reply_drops", 0)
    yield "fabric_ns_raft_messages_dropped_total", ("invalid",), core.counters["dropped_invalid"]
    yield "fabric_ns_raft_messages_dropped_total", ("stale",), core.counters["dropped_stale"]
    watch = node.watches.counters
    yield "fabric_ns_watches_created_total", (), watch["watches_created"]
    yield "fabric_ns_watches_cancelled_total", (), watch["watches_cancelled"]
    yield "fabric_ns_watch_events_total", (), watch["watch_events"]
    yield "fabric_ns_watch_overflows_total", (), watch["watch_overflows"]
    yield "fabric_ns_watch_clients_gone_total", (), watch["watch_clients_gone"]
    yield "fabric_ns_watches_refused_total", (), watch["watch_refused"]
    yield "fabric_ns_lease_expiries_total", (), node.leases.expiries
    yield "fabric_ns_sessions_evicted_total", (), stats["sessions_evicted"]
    yield "fabric_ns_quota_refusals_total", ("watches",), watch["watch_quota_refused"]
    yield "fabric_ns_quota_refusals_total", ("leases",), stats["leases_refused"]
    yield "fabric_ns_quota_refusals_total", ("sessions",), node.intake.sessions.refused
    members = node.membership.counters
    yield "fabric_ns_member_changes_total", ("proposed",), members["member_changes"]
    yield "fabric_ns_member_changes_total", ("refused",), members["member_changes_refused"]
    yield "fabric_ns_member_changes_total", ("deferred",), members["member_changes_deferred"]
    reads = node.reads.counters
    yield "fabric_ns_replies_limited_total", ("over_budget",), reads["replies_over_budget"]
    yield "fabric_ns_replies_limited_total", ("too_large",), reads["replies_too_large"]
    stale = node.stale
    yield "fabric_ns_stale_writes_refused_total", (), stale.refused
    yield "fabric_ns_stale_conflicts_total", (), stale.overlay.conflict_count
    yield "fabric_ns_stale_persist_failures_total", (), stale.persist_failures
    yield "fabric_ns_stale_replay_rounds_total", (), node.replayer.rounds

    yield "fabric_ns_request_duration_seconds", ("write",), node.writes.latency
    yield "fabric_ns_request_duration_seconds", ("read",), node.reads.latency
    yield "fabric_ns_request_duration_seconds", ("stale_write",), stale.latency
    yield "fabric_ns_commit_duration_seconds", (), node.writes.commit_latency
    yield "fabric_ns_fsync_duration_seconds", (), node.pipeline.fsync_latency
    yield "fabric_ns_read_index_wait_seconds", (), node.reads.index_wait


class NodeCollector(TableCollector):
    """The Prometheus collector of one node."""

    def __init__(self, node: Any) -> None:
        super().__init__(NODE_METRICS, lambda: node_samples(node))
