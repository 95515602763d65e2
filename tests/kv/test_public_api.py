"""The package's public surface is exactly its ``__all__``."""
from __future__ import annotations

import nameservice.errors
import nameservice.kv as kv


def test_all_lists_exactly_the_public_names() -> None:
    public = {  # the names are imported on first use: dir() lists them, getattr loads them
        name
        for name in dir(kv)
        if not name.startswith("_")
        and getattr(getattr(kv, name), "__module__", "").startswith(kv.__name__)
    }
    constants = {"FORMAT_VERSION", "MAX_BATCH_ITEMS", "MAX_KEY_BYTES", "MAX_VALUE_BYTES"}
    aliases = {"Command", "Proposal", "Result"}
    shared_errors = {"Compacted", "DecodeError"}  # defined once, in the project's error tree
    assert set(kv.__all__) == public | constants | aliases | shared_errors
    for name in shared_errors:
        assert getattr(kv, name) is getattr(nameservice.errors, name)
    assert len(kv.__all__) == len(set(kv.__all__))
    for name in kv.__all__:
        assert getattr(kv, name).__doc__ or name in constants | aliases
