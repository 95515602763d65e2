"""Keys and values as the ``fabric kv`` commands show them (docs/operations.md, "Values").

A key or value is bytes. Shown:

* **text** if it is valid UTF-8: as it is (JSON ``"value": "..."``);
* **a registry entry** if its key is under ``names/`` and it decodes as one (a msgpack map
  with an ``endpoint``; nameservice/names.py): decoded (JSON ``"entry": {"endpoint": ...,
  "meta": {...}}``, text: that object as JSON);
* **base64** otherwise (JSON ``"value_base64": "..."``, text: ``base64:...``).

Keys follow the same rule (``"key"`` or ``"key_base64"``). Text output can be mistaken (a text
value may itself read ``base64:...``); JSON cannot.
"""
from __future__ import annotations

import base64
import json
from typing import Any


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def registry_entry(kv: Any) -> dict[str, Any] | None:
    """The registry entry a key-value holds, decoded, or None if it is not one."""
    if not kv.key.startswith(b"names/"):
        return None
    from nameservice.names import entry_of

    entry = entry_of(kv)
    return None if entry is None else {"endpoint": entry.endpoint, "meta": entry.meta}


def key_fields(key: bytes) -> dict[str, str]:
    """``{"key": text}`` or ``{"key_base64": ...}``."""
    text = _text(key)
    return {"key": text} if text is not None else {"key_base64": _b64(key)}


def value_fields(kv: Any) -> dict[str, Any]:
    """``{"value": text}``, ``{"entry": {...}}`` or ``{"value_base64": ...}``."""
    entry = registry_entry(kv)
    if entry is not None:
        return {"entry": entry}
    text = _text(kv.value)
    return {"value": text} if text is not None else {"value_base64": _b64(kv.value)}


def key_text(key: bytes) -> str:
    """A key for a text line."""
    text = _text(key)
    return text if text is not None else "base64:" + _b64(key)


def value_text(kv: Any) -> str:
    """A key-value's value for a text line."""
    fields = value_fields(kv)
    if "entry" in fields:
        return json.dumps(fields["entry"], default=str)
    if "value" in fields:
        return fields["value"]
    return "base64:" + fields["value_base64"]


def kv_json(kv: Any) -> dict[str, Any]:
    """A key-value (``nameservice.kv.KeyValue``) as a JSON object."""
    return {**key_fields(kv.key), **value_fields(kv),
            "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
            "version": kv.version, "lease": kv.lease}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
