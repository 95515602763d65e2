"""Key pairs on disk and the ZAP handler: real files, real CURVE handshakes over TCP."""
from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from nameservice.errors import ConfigError
from nameservice.security.keys import generate, load_keys
from nameservice.security.sockets import secure_client, secure_server
from nameservice.security.zap import ZapHandler

HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def test_a_generated_pair_is_a_zeromq_certificate_with_a_private_secret(tmp_path):
    pair = generate(tmp_path / "keys", "node-1")
    secret_file = tmp_path / "keys" / "node-1.key_secret"
    public_file = tmp_path / "keys" / "node-1.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_file.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert zmq.auth.load_certificate(secret_file) == (pair.public, pair.secret)
    assert zmq.auth.load_certificate(public_file) == (pair.public, None)
    assert load_keys(tmp_path / "keys").own == pair
    with pytest.raises(ConfigError, match="never overwritten"):
        generate(tmp_path / "keys", "node-1")


def test_a_key_directory_with_a_readable_secret_or_no_single_secret_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_keys(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="exactly one"):
        load_keys(tmp_path / "empty")
    generate(tmp_path / "k", "a")
    os.chmod(tmp_path / "k" / "a.key_secret", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(tmp_path / "k")
    os.chmod(tmp_path / "k" / "a.key_secret", 0o600)
    generate(tmp_path / "k", "b")
    with pytest.raises(ConfigError, match="exactly one"):
        load_keys(tmp_path / "k")
    with pytest.raises(ConfigError, match="bad key name"):
        generate(tmp_path / "k", "../escape")


def test_the_trusted_public_keys_are_read_from_the_trusted_directory(tmp_path):
    own = generate(tmp_path / "k", "me")
    peer = generate(tmp_path / "peers", "peer")
    (tmp_path / "k" / "trusted").mkdir()
    os.link(tmp_path / "peers" / "peer.key", tmp_path / "k" / "trusted" / "peer.key")
    keys = load_keys(tmp_path / "k")
    assert keys.own == own and keys.trusted == {"peer": peer.public}


class _Server:
    def __init__(self, ctx: zmq.Context, own) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        secure_server(self.sock, own)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"


def _client(ctx: zmq.Context, own, server_public: bytes, endpoint: str):
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    secure_client(sock, own, server_public)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | HANDSHAKE_FAILED)
    sock.connect(endpoint)
    return sock, monitor


def _handshake(monitor, timeout_ms: int = 5000) -> int:
    """The first handshake event (fails the test if none comes in time)."""
    assert monitor.poll(timeout_ms), "no handshake event"
    return recv_monitor_message(monitor)["event"]


def test_an_allowed_key_talks_and_its_messages_carry_its_user_id_an_unknown_key_is_refused(
        tmp_path):
    ctx = zmq.Context()
    try:
        server_keys = generate(tmp_path, "server")
        alice, mallory = generate(tmp_path, "alice"), generate(tmp_path, "mallory")
        zap = ZapHandler(ctx, {alice.public: "alice"}).start()
        server = _Server(ctx, server_keys)
        good, good_monitor = _client(ctx, alice, server_keys.public, server.endpoint)
        bad, bad_monitor = _client(ctx, mallory, server_keys.public, server.endpoint)
        assert _handshake(good_monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert _handshake(bad_monitor) & HANDSHAKE_FAILED
        good.send(b"hello")
        assert server.sock.poll(5000)
        frame = server.sock.recv_multipart(copy=False)[1]
        assert frame.bytes == b"hello" and frame.get("User-Id") == "alice"
        assert zap.counters["zap_allowed"] == 1
        assert zap.counters["zap_refused_unknown_key"] >= 1
        # Rules replaced: alice's next handshake is refused, mallory's allowed.
        zap.allow({mallory.public: "mallory"})
        again, again_monitor = _client(ctx, alice, server_keys.public, server.endpoint)
        assert _handshake(again_monitor) & HANDSHAKE_FAILED
        for sock in (good, bad, again, good_monitor, bad_monitor, again_monitor, server.sock):
            sock.close(0)
        zap.close()
    finally:
        ctx.term()


def test_a_secured_socket_with_no_zap_handler_refuses_everyone(tmp_path):
    ctx = zmq.Context()
    try:
        server_keys, alice = generate(tmp_path, "server"), generate(tmp_path, "alice")
        server = _Server(ctx, server_keys)  # no ZapHandler in this context
        sock, monitor = _client(ctx, alice, server_keys.public, server.endpoint)
        assert _handshake(monitor) & HANDSHAKE_FAILED
        for s in (sock, monitor, server.sock):
            s.close(0)
    finally:
        ctx.term()


def test_a_client_that_expects_another_server_key_never_completes_the_handshake(tmp_path):
    ctx = zmq.Context()
    try:
        server_keys, impostor, alice = (generate(tmp_path, n) for n in ("s", "i", "alice"))
        zap = ZapHandler(ctx, {alice.public: "alice"}).start()
        server = _Server(ctx, impostor)  # listening with a key the client does not expect
        sock, monitor = _client(ctx, alice, server_keys.public, server.endpoint)
        assert _handshake(monitor) & HANDSHAKE_FAILED
        for s in (sock, monitor, server.sock):
            s.close(0)
        zap.close()
    finally:
        ctx.term()


def test_fabric_keys_generate_writes_a_pair_and_never_overwrites_one(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fabric", "keys", "generate", "node-1", "--dir",
           str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    public = done.stdout.decode().strip()
    assert load_keys(tmp_path).own.public.decode() == public
    again = subprocess.run(cmd, capture_output=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.decode().splitlines() == [
        f"fabric keys generate: {tmp_path / 'node-1.key'} exists: a key pair is never "
        f"overwritten"]


def test_a_refusal_is_logged_once_per_address_and_key_then_one_in_a_thousand(monkeypatch):
    from nameservice.security import zap

    monkeypatch.setattr(zap, "MAX_LOGGED", 2)
    shared = zap.RefusalLog()  # what the ZAP handlers of one process logged
    assert shared.first("10.0.0.1", b"k1")
    assert not shared.first("10.0.0.1", b"k1")  # another socket, the same peer: not again
    assert shared.first("10.0.0.2", b"k1")
    logged = [shared.first("10.0.0.3", b"k%d" % i) for i in range(3, 2000)]
    assert logged.count(True) == 2 and not logged[0]  # past MAX_LOGGED: the 1,000th ones


def test_a_channel_right_covers_its_partitions_and_their_count():
    from nameservice.security.rules import Rule

    rule = Rule("c", b"k" * 40, "component", produce=("orders",), consume=("counts",))
    assert rule.may_channel("produce", "orders/p3") and rule.may_channel("produce", "orders")
    assert not rule.may_channel("produce", "orders/px") and not rule.may_channel("produce",
                                                                                "ordersp1")
    assert not rule.may_channel("consume", "orders/p0")
    assert rule.may_read(b"partitions/anything")  # every key reads partition counts
    assert rule.may_write(b"partitions/counts") and not rule.may_write(b"partitions/orders")
