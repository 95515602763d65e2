"""Invariants of the state machine over random command sequences (hypothesis)."""
from __future__ import annotations

import os

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nameservice.kv import (
    Batch,
    Cas,
    CasResult,
    CloseSession,
    Compacted,
    DecodeError,
    Delete,
    DeleteRange,
    EventType,
    KvConfig,
    KvStateMachine,
    LeaseExpire,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    Put,
    RejectCode,
    Rejected,
    Request,
    StaleOverlay,
    StaleWrite,
    decode_command,
    decode_event,
    decode_result,
    encode_command,
)

# In CI the examples are derived from each test's name, so a run there is repeatable; on a
# developer's machine they are random, so new cases keep being explored.
SETTINGS = settings(
    deadline=None,
    max_examples=150,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)

# Small bounds so that quotas, windows and evictions all happen within a short sequence.
SMALL = KvConfig(
    max_keys=5,
    max_leases=2,
    min_lease_ttl_ms=500,
    max_sessions=3,
    session_window=3,
    max_cached_results=6,
)

keys = st.sampled_from([b"a", b"a/1", b"a/2", b"b", b"b/1", b"\xff"])
prefixes = st.sampled_from([b"", b"a", b"a/", b"b/", b"c", b"\xff"])
values = st.sampled_from([b"", b"x", b"y", b"zz"])
revisions = st.integers(0, 12)
lease_ids = st.integers(1, 3)

commands = st.one_of(
    st.builds(Put, keys, values, lease=st.integers(0, 3), prev_kv=st.booleans()),
    st.builds(Delete, keys),
    st.builds(DeleteRange, prefixes),
    st.builds(Cas, keys, values | st.none(), expect_value=values),
    st.builds(Cas, keys, values | st.none(), expect_mod_revision=revisions),
    st.builds(Cas, keys, values, expect_absent=st.just(True), lease=st.integers(0, 3)),
    st.builds(StaleWrite, keys, values | st.none(), revisions),
    st.builds(LeaseGrant, st.integers(0, 3), st.integers(1, 3000)),
    st.builds(LeaseRevoke, lease_ids),
    st.builds(LeaseExpire, lease_ids),
    st.builds(OpenSession),
    st.builds(CloseSession, st.integers(1, 4)),
)


@st.composite
def requests(draw):
    seq = draw(st.integers(1, 8))
    ack = draw(st.one_of(st.just(0), st.integers(0, seq - 1)))
    return Request(draw(st.integers(1, 4)), seq, draw(commands), ack)


items = st.one_of(commands, requests())
proposals = st.one_of(items, st.builds(Batch, st.lists(items, max_size=5).map(tuple)))
histories = st.lists(proposals, max_size=40)


def _run(machine: KvStateMachine, ops, encoded: bool = True, first_index: int = 1):
    out = []
    for index, op in enumerate(ops, first_index):
        if encoded:
            out.append(machine.apply_entry(index, encode_command(op)))
        else:
            out.append(machine.apply(index, op))
    return out


@SETTINGS
@given(histories)
def test_replicas_applying_the_same_log_end_byte_identical(ops) -> None:
    # Different local history bounds and decoded vs encoded input must not matter.
    one = KvStateMachine(SMALL)
    two = KvStateMachine(
        KvConfig(**{**_fields(SMALL), "history_events": 2, "history_bytes": 300})
    )
    applied_one = _run(one, ops, encoded=True)
    applied_two = _run(two, ops, encoded=False)
    assert [a.results for a in applied_one] == [a.results for a in applied_two]
    assert [a.events for a in applied_one] == [a.events for a in applied_two]
    assert one.snapshot() == two.snapshot()


def _fields(config: KvConfig) -> dict:
    return {name: getattr(config, name) for name in config.__slots__}


@SETTINGS
@given(histories, st.data())
def test_snapshot_restore_then_continue_equals_continuing(ops, data) -> None:
    cut = data.draw(st.integers(0, len(ops)))
    straight = KvStateMachine(SMALL)
    expected = _run(straight, ops)
    before = KvStateMachine(SMALL)
    _run(before, ops[:cut])
    restored = KvStateMachine(SMALL)
    restored.restore(before.snapshot())
    assert restored.snapshot() == before.snapshot()
    continued = _run(restored, ops[cut:], first_index=cut + 1)
    assert [a.results for a in continued] == [a.results for a in expected[cut:]]
    assert [a.events for a in continued] == [a.events for a in expected[cut:]]
    assert restored.snapshot() == straight.snapshot()


@SETTINGS
@given(st.data())
def test_retried_requests_never_apply_twice_and_keep_their_first_result(data) -> None:
    machine = KvStateMachine(KvConfig(max_sessions=2, session_window=3, max_cached_results=5))
    index = 0
    templates: dict[tuple[int, int], object] = {}
    first_result: dict[tuple[int, int], object] = {}
    applications: dict[bytes, int] = {}
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        batch = []
        for _ in range(data.draw(st.integers(1, 3))):
            if data.draw(st.integers(0, 9)) == 0:
                batch.append(OpenSession())
                continue
            client = data.draw(st.integers(1, 4), label="client")
            seq = data.draw(st.integers(1, 10), label="seq")
            if (client, seq) not in templates:
                unique = b"%d:%d" % (client, seq)  # every request writes its own value
                templates[client, seq] = data.draw(
                    st.one_of(
                        st.builds(Put, keys, st.just(unique)),
                        st.builds(Cas, keys, st.just(unique), expect_mod_revision=revisions),
                        st.builds(Cas, keys, st.just(unique), expect_absent=st.just(True)),
                    )
                )
            ack = data.draw(st.one_of(st.just(0), st.integers(0, seq - 1)))
            batch.append(Request(client, seq, templates[client, seq], ack))
        index += 1
        applied = machine.apply_entry(index, encode_command(Batch(tuple(batch))))
        for event in applied.events:
            if event.type is EventType.PUT:
                applications[event.value] = applications.get(event.value, 0) + 1
        for item, result in zip(batch, applied.results):
            if type(item) is not Request:
                continue
            if isinstance(result, Rejected) and result.code in (
                RejectCode.SEQ_TOO_OLD,
                RejectCode.SESSION_EXPIRED,
            ):
                continue  # not applied now; nothing to compare
            key = (item.client_id, item.seq)
            assert first_result.setdefault(key, result) == result
    assert all(count == 1 for count in applications.values()), applications


def _apply_events(events, state: dict) -> None:
    for event in events:
        if event.type is EventType.PUT:
            state[event.key] = event.kv
        else:
            state.pop(event.key, None)


@SETTINGS
@given(histories, st.data())
def test_events_since_is_exactly_the_changes_from_that_revision_on(ops, data) -> None:
    full = KvStateMachine(KvConfig(**{**_fields(SMALL), "history_events": 10_000}))
    small = KvStateMachine(KvConfig(**{**_fields(SMALL), "history_events": 4}))
    all_events = [e for a in _run(full, ops) for e in a.events]
    _run(small, ops)
    assert [e.mod_revision for e in all_events] == list(range(1, full.revision + 1))
    rebuilt: dict = {}
    _apply_events(all_events, rebuilt)  # a watcher from revision 1 mirrors the store
    assert [rebuilt[k] for k in sorted(rebuilt)] == full.range()
    for _ in range(3):
        since = data.draw(st.integers(0, full.revision + 2), label="since")
        prefix = data.draw(prefixes, label="prefix")
        wanted = [e for e in all_events if e.mod_revision >= since and e.key.startswith(prefix)]
        assert full.events_since(since, prefix) == wanted
        try:
            got = small.events_since(since, prefix)
        except Compacted as exc:
            assert max(since, 1) < exc.oldest <= small.revision + 1
            assert exc.oldest >= small.revision - 3
            tail = [e for e in wanted if e.mod_revision >= exc.oldest]
            assert small.events_since(exc.oldest, prefix) == tail
        else:
            assert got == wanted


@SETTINGS
@given(histories)
def test_store_matches_a_plain_dictionary_model(ops) -> None:
    """Revisions, versions and values follow the rules of docs/kv.md for key commands."""
    machine = KvStateMachine(KvConfig(max_keys=10_000))
    model: dict[bytes, tuple[bytes, int, int, int]] = {}
    revision = 0
    index = 0
    for op in ops:
        for cmd in op.items if type(op) is Batch else (op,):
            cmd = cmd.command if type(cmd) is Request else cmd
            if type(cmd) not in (Put, Delete, DeleteRange, Cas) or getattr(cmd, "lease", 0):
                continue
            index += 1
            result = machine.apply_entry(index, encode_command(cmd)).results[0]
            current = model.get(getattr(cmd, "key", b""))
            mod = current[2] if current else 0
            if type(cmd) is Put or (
                type(cmd) is Cas
                and (
                    (cmd.expect_value is not None and current and current[0] == cmd.expect_value)
                    or (cmd.expect_mod_revision is not None and mod == cmd.expect_mod_revision)
                    or (cmd.expect_absent and current is None)
                )
            ):
                if cmd.value is None:
                    if current:
                        revision += 1
                        del model[cmd.key]
                else:
                    revision += 1
                    create, version = (current[1], current[3] + 1) if current else (revision, 1)
                    model[cmd.key] = (cmd.value, create, revision, version)
                if type(cmd) is Cas:
                    assert isinstance(result, CasResult) and result.succeeded
            elif type(cmd) is Cas:
                assert isinstance(result, CasResult) and not result.succeeded
            elif type(cmd) is Delete and current:
                revision += 1
                del model[cmd.key]
            elif type(cmd) is DeleteRange:
                for key in sorted(k for k in model if k.startswith(cmd.prefix)):
                    revision += 1
                    del model[key]
            assert machine.revision == revision
    assert [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
        for kv in machine.range()
    ] == [(k, *model[k]) for k in sorted(model)]


@SETTINGS
@given(proposals)
def test_codec_round_trips_every_command(op) -> None:
    assert decode_command(encode_command(op)) == op


def _only_decode_error(decode, data) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(data) -> None:
    for decode in (decode_command, decode_result, decode_event):
        _only_decode_error(decode, data)
        _only_decode_error(decode, b"\x01" + data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=8)
    | st.text(max_size=4)
)
wire_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


@SETTINGS
@given(st.lists(st.integers(0, 20) | wire_values, min_size=1, max_size=7))
def test_well_formed_msgpack_of_the_wrong_shape_raises_decode_error(wire) -> None:
    data = b"\x01" + msgpack.packb(wire, use_bin_type=True)
    for decode in (decode_command, decode_result, decode_event):
        _only_decode_error(decode, data)


@SETTINGS
@given(proposals, st.data())
def test_damaged_encodings_raise_decode_error(op, data) -> None:
    encoded = bytearray(encode_command(op))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for damaged in (bytes(encoded), bytes(encoded[:cut])):
        _only_decode_error(decode_command, damaged)


@SETTINGS
@given(histories, st.data())
def test_damaged_snapshots_raise_decode_error_or_restore_consistently(ops, data) -> None:
    machine = KvStateMachine(SMALL)
    _run(machine, ops)
    snapshot = bytearray(machine.snapshot())
    position = data.draw(st.integers(0, len(snapshot) - 1))
    snapshot[position] = data.draw(st.integers(0, 255))
    target = KvStateMachine(SMALL)
    try:
        target.restore(bytes(snapshot))
    except DecodeError:
        assert target.snapshot() == KvStateMachine(SMALL).snapshot()
    else:
        # a change that still decodes must give a state that restores consistently
        again = KvStateMachine(SMALL)
        again.restore(target.snapshot())
        assert again.snapshot() == target.snapshot()


@SETTINGS
@given(
    st.lists(st.tuples(keys, values), max_size=4),
    st.lists(st.tuples(keys, values | st.none()), min_size=1, max_size=8),
    st.lists(st.tuples(keys, values), max_size=6),
)
def test_partition_then_heal_follows_the_stale_write_rule(before, local, majority) -> None:
    """Keys only the cut-off node wrote end with its last value; keys the majority wrote during
    the partition keep the majority's value; nothing is lost without a reported conflict."""
    machine = KvStateMachine()
    index = 0

    def apply(proposal):
        nonlocal index
        index += 1
        return machine.apply_entry(index, encode_command(proposal))

    for key, value in before:
        apply(Put(key, value))
    node = apply(OpenSession()).results[0].client_id
    at_partition = {kv.key: kv for kv in machine.range()}
    overlay = StaleOverlay()
    node_last: dict = {}
    for key, value in local:  # the node's applied state is frozen while it is cut off
        overlay.write(key, value, at_partition.get(key))
        node_last[key] = value
    majority_last: dict = {}
    for key, value in majority:
        apply(Put(key, value))
        majority_last[key] = value
    pending = overlay.pending()
    requests = tuple(Request(node, i + 1, p.command()) for i, p in enumerate(pending))
    results = apply(Batch(requests)).results
    conflicts = [c for c in (overlay.settle(p, r) for p, r in zip(pending, results)) if c]
    assert len(overlay) == 0
    for key in node_last.keys() | majority_last.keys():
        final = machine.get(key)
        final_value = None if final is None else final.value
        if key not in majority_last:
            assert final_value == node_last[key]
        elif key not in node_last:
            assert final_value == majority_last[key]
        else:
            assert final_value == majority_last[key]
            wanted_same = node_last[key] == majority_last[key]
            assert any(c.key == key for c in conflicts) != wanted_same
    assert {c.key for c in conflicts} <= node_last.keys() & majority_last.keys()
