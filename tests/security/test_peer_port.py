"""A secured node's peer port (issue 13): the Raft and snapshot frames come in on a port of
their own, open only to the members' (ns-peer) keys; the client port takes none of them, from
any key. Real processes: a secured three-node cluster, each node with HOST:PORT/PEERPORT."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from nameservice import wire
from nameservice.address import parse_cluster, parse_member
from nameservice.errors import ConfigError
from nameservice.raft.messages import VoteRequest
from nameservice.security.context import Security
from nameservice.security.keys import load_keys
from nameservice.server.local import LocalCluster
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

ROOT = str(Path(__file__).resolve().parents[2])


def test_a_member_address_names_its_peer_port_or_shares_the_client_port():
    assert parse_member("10.0.0.1:7400/7401") == ("10.0.0.1:7400", "10.0.0.1:7401")
    assert parse_member("host:7400") == ("host:7400", "host:7400")
    for bad in ("h:7400/", "h:7400/0", "h:7400/x", "h:7400/7400", "h:7400/70000"):
        with pytest.raises(ConfigError):
            parse_member(bad)
    assert parse_cluster("1=h:1/2,2=h:3/4") == {1: "h:1/2", 2: "h:3/4"}
    with pytest.raises(ConfigError):  # the same client address twice
        parse_cluster("1=h:1/2,2=h:1/4")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("peer-port"), 3, secure=("admin",)) as found:
        found.start()
        yield found


def _status(cluster: LocalCluster) -> dict[int, dict]:
    done = subprocess.run([sys.executable, "-m", "fabric", "ns", "status", "--json", "--ns",
                           cluster.ns_arg],
                          env={**os.environ, "FABRIC_KEYS": str(cluster.keys["admin"])},
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return {row["id"]: row for row in json.loads(done.stdout) if "term" in row}


def _forged_vote(term: int) -> bytes:
    """A VoteRequest from node 2 to node 1 that would win: a far higher term, transfer set."""
    return wire.encode_peer_frame([VoteRequest(2, 1, term, 10**9, term - 1, transfer=True)])


def _send(keys: Path, address: str, frame: bytes, server_key_of: str) -> None:
    """Connect a DEALER with ``keys`` to ``address`` (expecting the key trusted for the node
    at ``server_key_of``), send ``frame`` a few times and let it leave."""
    security = Security(load_keys(keys))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        security.connect(sock, server_key_of)
        sock.connect(f"tcp://{address}")
        for _ in range(5):
            sock.send(frame)
    finally:
        sock.close(linger=1000)
        ctx.term()
        security.close()


def test_the_peer_port_refuses_every_key_but_the_members(cluster):
    before = _status(cluster)
    term = before[1]["term"]
    client, peer = parse_member(cluster.member(1))
    assert peer != client
    refused = before[1]["security"]["zap_refused_unknown_key"]
    # An admin key may do anything on the client port, but it is no member: the peer port
    # refuses its handshake, and nothing it sends is stepped.
    _send(cluster.keys["admin"], peer, _forged_vote(term + 100), client)
    wait_for(lambda: _status(cluster)[1]["security"]["zap_refused_unknown_key"] > refused, 10,
             "node 1 to refuse the admin key on its peer port")
    after = _status(cluster)
    assert after[1]["term"] == term and after[1]["counters"]["forbidden_peer_frames"] == 0
    assert {row["leader"] for row in after.values()} == {before[1]["leader"]}


def test_the_client_port_takes_no_peer_frame_even_from_a_member_key(cluster):
    before = _status(cluster)
    term = before[1]["term"]
    client, _peer = parse_member(cluster.member(1))
    forbidden = before[1]["counters"]["forbidden_peer_frames"]
    # Node 2's own keys, on node 1's client port: admitted (an allowed key), but peer frames
    # are taken only from the peer port.
    _send(cluster.keys["node-2"], client, _forged_vote(term + 100), client)
    wait_for(lambda: _status(cluster)[1]["counters"]["forbidden_peer_frames"] > forbidden, 10,
             "node 1 to drop the peer frames that came in on its client port")
    after = _status(cluster)
    assert after[1]["term"] == term
    assert {row["leader"] for row in after.values()} == {before[1]["leader"]}
    # And the cluster still serves.
    done = subprocess.run([sys.executable, "-m", "fabric", "kv", "put", "k", "v", "--ns",
                           cluster.ns_arg],
                          env={**os.environ, "FABRIC_KEYS": str(cluster.keys["admin"])},
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
