"""Command constructors check their fields, so every command that exists is valid."""
from __future__ import annotations

import pytest

from nameservice.kv import (
    MAX_BATCH_ITEMS,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Batch,
    Cas,
    CloseSession,
    Delete,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    Put,
    Request,
    StaleWrite,
)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Put(b"", b"v"),
        lambda: Put(b"k" * (MAX_KEY_BYTES + 1), b"v"),
        lambda: Put(b"k", b"v" * (MAX_VALUE_BYTES + 1)),
        lambda: Put(b"k", b"v", lease=-1),
        lambda: Delete(b""),
        lambda: Cas(b"k", b"v"),
        lambda: Cas(b"k", b"v", expect_value=b"a", expect_absent=True),
        lambda: Cas(b"k", b"v", expect_mod_revision=-1),
        lambda: Cas(b"k", None, expect_absent=True, lease=3),
        lambda: StaleWrite(b"k", b"v", -1),
        lambda: LeaseGrant(0, 0),
        lambda: LeaseGrant(-1, 1000),
        lambda: LeaseRevoke(0),
        lambda: CloseSession(0),
        lambda: Request(0, 1, Put(b"k", b"v")),
        lambda: Request(1, 0, Put(b"k", b"v")),
        lambda: Request(1, 3, Put(b"k", b"v"), ack=3),
        lambda: Batch((Put(b"k", b"v"),) * (MAX_BATCH_ITEMS + 1)),
    ],
)
def test_out_of_bounds_fields_raise_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: Put(1, b"v"),
        lambda: Put(b"k", None),
        lambda: Put(b"k", b"v", lease=True),
        lambda: Put(b"k", b"v", prev_kv=1),
        lambda: Cas(b"k", b"v", expect_mod_revision=1.0),
        lambda: LeaseGrant(1, "1000"),
        lambda: Request(1, 1, Request(1, 1, Put(b"k", b"v"))),
        lambda: Request(1, 1, Batch(())),
        lambda: Batch((Batch(()),)),
        lambda: Batch(("put",)),
    ],
)
def test_wrong_types_raise_type_error(build) -> None:
    with pytest.raises(TypeError):
        build()


def test_str_bytearray_and_memoryview_become_bytes() -> None:
    assert Put("k", "v") == Put(b"k", b"v")
    assert Put(bytearray(b"k"), memoryview(b"v")) == Put(b"k", b"v")
    assert type(Cas("k", "v", expect_value="w").expect_value) is bytes


def test_batch_accepts_a_list_and_stores_a_tuple() -> None:
    batch = Batch([Put(b"k", b"v"), Request(1, 1, OpenSession())])
    assert type(batch.items) is tuple and len(batch.items) == 2


def test_commands_are_frozen_and_slotted() -> None:
    put = Put(b"k", b"v")
    with pytest.raises(AttributeError):
        put.key = b"other"  # type: ignore[misc]
    assert not hasattr(put, "__dict__")
    assert DeleteRange(b"") == DeleteRange(b"")
