"""The byte examples in docs/protocol.md and docs/ns-protocol.md are what the codecs produce.

Each example is a fenced block tagged ``frame`` (fabric's data path) or ``nsframe`` (the name
service): its first line describes the frame, the following lines are its bytes in hex. The
test builds the frame from the description with the project's own codec and checks both ways:
encoding the description gives exactly the bytes, and decoding the bytes gives the description.

    ``frame``:   NAME field=JSON ...      e.g. ``NACK first_seqs=[1000,1003]`` (``*_id`` fields
                 are hex strings; ``payloads`` is the batch body, msgpack-encoded)
    ``nsframe``: KIND PYTHON-LITERAL      e.g. ``REQUEST [[1, 2, b"k", True]]`` (b"..." is
                 msgpack bin, "..." msgpack str, None nil)

When the format changes on purpose, ``FABRIC_REWRITE_DOC_EXAMPLES=1`` rewrites the hex lines of
every example from its description (then read the diff).
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

from fabric import protocol as p
from nameservice import wire
from nameservice.kv.codec import kv_from_wire, proposal_from_wire, result_from_wire

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```(frame|nsframe)\n(.*?)```", re.DOTALL)
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\[.*?\](?=\s|$)|\S+)')
REWRITE = os.environ.get("FABRIC_REWRITE_DOC_EXAMPLES") == "1"

FRAMES = {"HELLO": p.Hello, "HEARTBEAT": p.Heartbeat, "BATCH": p.Batch, "ACK": p.Ack,
          "NACK": p.Nack, "PEER_GONE": p.PeerGone, "WHO": p.Who, "DRAIN": p.Drain,
          "CLAIM": p.Claim, "CLAIMED": p.Claimed, "GOODBYE": p.Goodbye}
TYPES = {name: getattr(p, "T_" + name) for name in FRAMES}
KINDS = {"REQUEST": wire.REQUEST, "REPLY": wire.REPLY, "EVENT": wire.EVENT}


def blocks(path: Path, tag: str) -> list[tuple[str, bytes]]:
    """``(description, bytes)`` of every example tagged ``tag`` in ``path``."""
    out = []
    for found in BLOCK.finditer(path.read_text()):
        if found.group(1) != tag:
            continue
        lines = found.group(2).strip("\n").split("\n")
        out.append((lines[0], bytes.fromhex(" ".join(lines[1:]))))
    return out


def hex_lines(data: bytes) -> str:
    return "\n".join(data[i:i + 16].hex(" ") for i in range(0, len(data), 16))


def rewrite(path: Path, tag: str, encode) -> None:
    """Replace the bytes of every ``tag`` example in ``path`` by ``encode(description)``."""
    def one(found: re.Match) -> str:
        if found.group(1) != tag:
            return found.group(0)
        description = found.group(2).strip("\n").split("\n")[0]
        return f"```{tag}\n{description}\n{hex_lines(encode(description))}\n```"
    path.write_text(BLOCK.sub(one, path.read_text()))


# ---------------------------------------------------------------- fabric data path

def fabric_frame(description: str) -> tuple[p.Frame, list | None]:
    """The frame a ``frame`` description stands for, and its payloads (BATCH only)."""
    name, _, rest = description.partition(" ")
    fields, payloads = {}, None
    for key, raw in FIELD.findall(rest):
        value = json.loads(raw)
        if key.endswith("_id"):
            value = bytes.fromhex(value)
        elif key == "payloads":
            key, payloads, value = "body", value, p.encode_payloads(value)
        elif key in ("entries", "first_seqs"):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        fields[key] = value
    assert FIELD.sub("", rest).strip() == "", f"unparsed text in {description!r}"
    return FRAMES[name](**fields), payloads


if REWRITE:
    rewrite(DOCS / "protocol.md", "frame", lambda d: p.encode(fabric_frame(d)[0]))

FABRIC_EXAMPLES = blocks(DOCS / "protocol.md", "frame")


@pytest.mark.parametrize("description,data", FABRIC_EXAMPLES, ids=[d for d, _ in FABRIC_EXAMPLES])
def test_each_data_path_example_is_exactly_what_the_codec_makes(description, data):
    msg, payloads = fabric_frame(description)
    assert p.encode(msg) == data, f"expected:\n{hex_lines(p.encode(msg))}"
    assert p.decode(data) == msg
    assert data[1] == TYPES[description.split()[0]]
    if payloads is not None:
        assert p.decode_payloads(msg.body, msg.count) == payloads


def test_every_data_path_frame_type_has_an_example():
    shown = {description.split()[0] for description, _ in FABRIC_EXAMPLES}
    assert shown == set(FRAMES)
    assert sorted(TYPES.values()) == list(range(1, len(FRAMES) + 1))  # and no other type


def test_the_frame_table_lists_every_type_by_its_number():
    text = (DOCS / "protocol.md").read_text()
    for name, number in TYPES.items():
        assert f"| {number} | {name} |" in text
        assert f"### {name} ({number})" in text


# ---------------------------------------------------------------- name service

def ns_frame(description: str) -> tuple[int, list]:
    kind, _, literal = description.partition(" ")
    return KINDS[kind], ast.literal_eval(literal)


if REWRITE:
    rewrite(DOCS / "ns-protocol.md", "nsframe", lambda d: wire.frame(*ns_frame(d)))

NS_EXAMPLES = blocks(DOCS / "ns-protocol.md", "nsframe")


@pytest.mark.parametrize("description,data", NS_EXAMPLES, ids=[d[:60] for d, _ in NS_EXAMPLES])
def test_each_name_service_example_is_exactly_what_the_codec_makes(description, data):
    kind, body = ns_frame(description)
    assert wire.frame(kind, body) == data, f"expected:\n{hex_lines(wire.frame(kind, body))}"
    assert wire.split_frame(data, wire.MAX_CLIENT_FRAME) == (kind, body)
    if kind == wire.REQUEST:
        for item in body:
            wire.check_request(item)
            if item[1] == wire.OP_WRITE:
                proposal_from_wire(item[2])  # a command the node accepts
    elif kind == wire.REPLY:
        for item in body:
            wire.reply_from_wire(item)
    else:
        for item in body:
            for _, kv in item[4] if item[1] == wire.PUSH_EVENTS else ():
                kv_from_wire(kv)


def test_the_name_service_examples_show_a_put_a_get_a_cas_and_a_watch_push():
    def items(kind: str) -> list:
        return [item for d, _ in NS_EXAMPLES if d.startswith(kind) for item in ns_frame(d)[1]]

    requests = items("REQUEST")
    ops = {rid: op for rid, op, *_ in requests}
    assert {wire.OP_WRITE, wire.OP_GET, wire.OP_WATCH} <= set(ops.values())
    commands = {item[2][4][0] for item in requests
                if item[1] == wire.OP_WRITE and item[2][0] == 16}
    assert {1, 4} <= commands  # a put and a cas, inside session requests
    results = {type(result_from_wire(payload)).__name__ for rid, status, payload in items("REPLY")
               if status == wire.ST_OK and ops.get(rid) == wire.OP_WRITE}
    assert {"PutResult", "CasResult"} <= results
    assert any(push[0] and push[1] == wire.PUSH_EVENTS and push[4] for push in items("EVENT"))
