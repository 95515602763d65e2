"""Handshakes refused before the ZAP handler is asked (a peer without keys, a peer expecting
another server key) are counted on the server, and read by the client: real CURVE sockets
over TCP; a process's handlers outlive no context of theirs."""
from __future__ import annotations

import struct

import pytest
import zmq

from nameservice.security.context import Security
from nameservice.security.handshakes import (
    COUNTERS,
    handshake_failure,
    parse_event,
    refusal,
)
from nameservice.security.keys import KeyPair, generate, load_keys
from nameservice.security.rules import Rule
from nameservice.security.sockets import secure_client
from tests.waiting import wait_for


@pytest.mark.parametrize(("event", "value", "counter"), [
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
     "handshake_refused_mechanism"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC,
     "handshake_refused_crypto"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_HELLO,
     "handshake_failed_other"),
    (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, "handshake_failed_other"),
    (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, None),  # the ZAP handler's to count
    (zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, None),
    (zmq.EVENT_ACCEPTED, 12, None),
])
def test_each_failed_handshake_event_adds_to_its_counter(event, value, counter):
    assert refusal(event, value) == counter
    assert counter is None or counter in COUNTERS


@pytest.mark.parametrize(("event", "value", "keyed", "why"), [
    (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, True, "the node refused this process's key"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, False,
     "the node uses another security mechanism"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, True,
     "the node uses another security mechanism"),
    (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 104, True,
     "the handshake failed (is the node's key the one trusted for its address?)"),
    # Cut short for a keyless client: the node saw the mismatch first; the retry tells.
    (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 104, False, ""),
])
def test_a_client_says_why_its_handshake_failed_and_only_when_it_knows(event, value, keyed,
                                                                       why):
    found = handshake_failure(event, value, keyed)
    assert found.startswith(why) and bool(found) == bool(why)


def test_a_monitor_message_is_parsed_and_anything_else_is_not():
    frames = [struct.pack("=HI", zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 7), b"tcp://h:1"]
    assert parse_event(frames) == (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 7, "tcp://h:1")
    assert parse_event([b"\x00" * 5, b""]) is None
    assert parse_event([struct.pack("=HI", 1, 2)]) is None


def _server(ctx: zmq.Context, security: Security) -> tuple[zmq.Socket, str]:
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    security.serve(sock)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"


def test_a_peer_without_keys_and_one_expecting_another_key_are_counted_and_logged(
        tmp_path, caplog):
    generate(tmp_path / "server", "server")
    security = Security(load_keys(tmp_path / "server"))
    other, stranger = generate(tmp_path / "o", "other"), generate(tmp_path / "s", "stranger")
    own = security.keys.own if security.keys else None
    assert own is not None
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    try:
        server, endpoint = _server(ctx, security)

        def client(pair: KeyPair | None = None, expects: bytes = b"") -> None:
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            if pair is not None:
                secure_client(sock, pair, expects)
            sock.connect(endpoint)
            sock.send(b"let me in")
            socks.append(sock)

        client()  # no keys: NULL against CURVE, refused before ZAP
        wait_for(lambda: security.counters()["handshake_refused_mechanism"] == 1, 10,
                 "the keyless peer to be counted")
        client(stranger, other.public)  # a key of its own, expecting another server's
        wait_for(lambda: security.counters()["handshake_refused_crypto"] >= 1, 10,
                 "the peer expecting another key to be counted")
        client(stranger, own.public)  # the right server key, a key not allowed: ZAP's refusal
        wait_for(lambda: security.counters()["zap_refused_unknown_key"] == 1, 10,
                 "the unknown key to be counted")
        assert server.poll(200) == 0  # nobody got a message through
        counters = security.counters()
        assert counters["handshake_refused_mechanism"] == 1
        assert counters["zap_refused_mechanism"] == 0  # ZAP never hears of a keyless peer
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == "nameservice.security.handshakes"]
        assert f"refused a connection on {endpoint} (1 so far): the peer has no keys (it " \
               f"speaks another mechanism than CURVE)" in warnings
        assert any("expects another server key" in w for w in warnings)
        # A closed socket's monitor ends with it; a new socket is watched the same way.
        server.close(0)
        server, endpoint = _server(ctx, security)
        client()
        wait_for(lambda: security.counters()["handshake_refused_mechanism"] == 2, 10,
                 "the second socket's keyless peer to be counted")
        server.close(0)
    finally:
        for sock in socks:
            sock.close(0)
        security.close()
        ctx.term()  # returns: the watch closed its monitor sockets


def test_a_context_made_after_another_ended_gets_handlers_of_its_own(tmp_path):
    """libzmq often gives a new context the address of one just terminated: the handlers of
    the old one (ended with it) must not be taken for the new one's, which would then admit
    nobody (no ZAP handler answers) and never terminate (a monitor nobody reads)."""
    generate(tmp_path / "server", "server")
    alice = generate(tmp_path / "alice", "alice")
    security = Security(load_keys(tmp_path / "server"))
    assert security.keys is not None
    security.set_rules({alice.public: Rule("alice", alice.public, "component")}, frozenset())
    try:
        for _ in range(3):
            ctx = zmq.Context()
            server, endpoint = _server(ctx, security)
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            secure_client(sock, alice, security.keys.own.public)
            sock.connect(endpoint)
            sock.send(b"hello")
            assert server.poll(5000), "the allowed key was not admitted"
            sock.close(0)
            server.close(0)
            ctx.term()
        assert security.counters()["zap_allowed"] == 3  # the ended contexts' counts kept
    finally:
        security.close()
