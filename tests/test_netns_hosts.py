"""``tests/netns.Hosts`` proved with real TCP traffic: every host reaches every other and the
root namespace; a cut cable is silent both ways (a send succeeds, a receive times out, no
error; a new connection is not failed as unreachable either) while the other hosts talk on,
and a connection established before the cut delivers again once healed; ``remove`` leaves
nothing behind, also after a failed ``create``. Skipped where namespaces cannot be made (not
root, no ``ip``).
"""
from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from tests.netns import Hosts, NetnsUnavailable, hosts_fixture  # noqa: F401  (a fixture)
from tests.waiting import wait_for

PY = sys.executable
ECHO_PORT = 7000
PEER_PORT = 7001

ECHO = """
import socket, sys, threading
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""

# argv: a timeout in seconds, then ADDRESS:PORT of echo servers; one line about each.
REACH = """
import socket, sys
for target in sys.argv[2:]:
    address, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((address, int(port)), timeout=float(sys.argv[1])) as s:
            s.sendall(target.encode())
            echoed = b""
            while len(echoed) < len(target) and (chunk := s.recv(4096)):
                echoed += chunk
        print(target, "ok" if echoed == target.encode() else f"echoed {echoed!r}", flush=True)
    except OSError as exc:
        print(target, type(exc).__name__, exc, flush=True)
"""

# argv: listen|connect ADDRESS PORT; then one TCP connection driven by lines on stdin:
# "send WORD" sends WORD and a newline; "recv SECONDS" waits that long for a line.
PEER = """
import socket, sys
mode, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "listen":
    server = socket.create_server((address, port))
    print("ready", flush=True)
    sock = server.accept()[0]
else:
    sock = socket.create_connection((address, port), timeout=5)
print("connected", flush=True)
pending = b""
while line := sys.stdin.readline():
    verb, arg = line.split()
    try:
        if verb == "send":
            sock.settimeout(None)
            sock.sendall(arg.encode() + b"\\n")
            print("sent", flush=True)
        else:
            sock.settimeout(float(arg))
            while b"\\n" not in pending:
                chunk = sock.recv(4096)
                if not chunk:
                    raise EOFError("closed by the other end")
                pending += chunk
            got, pending = pending.split(b"\\n", 1)
            print("got", got.decode(), flush=True)
    except TimeoutError:
        print("timeout", sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), flush=True)
    except Exception as exc:
        print("error", type(exc).__name__, exc, flush=True)
"""


class Proc:
    """A process started for a test, whose stdout lines are awaited with a deadline."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        stdin, stdout, stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        assert stdin and stdout and stderr
        self._stdin, self._stdout, self._stderr = stdin, stdout, stderr
        self._pending = b""

    def tell(self, line: str) -> None:
        self._stdin.write(line.encode() + b"\n")
        self._stdin.flush()

    def line(self, timeout: float, what: str) -> str:
        """The next line of stdout (or how the process ended), within ``timeout`` seconds."""
        return wait_for(self._next_line, timeout, what)

    def _next_line(self) -> str | None:
        if b"\n" not in self._pending and select.select([self._stdout], [], [], 0)[0]:
            chunk = os.read(self._stdout.fileno(), 4096)
            if not chunk:
                self.proc.wait(5)
                return f"exited {self.proc.returncode}: {self._stderr.read().decode()}"
            self._pending += chunk
        if b"\n" not in self._pending:
            return None
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def output(self, timeout: float) -> list[str]:
        """Every line of stdout once the process has exited (within ``timeout`` seconds)."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"{self.argv}: {self.proc.returncode}, {err.decode()}"
        return out.decode().splitlines()


@pytest.fixture
def started(hosts):
    """Start processes (a :class:`Proc` from an argv); all are killed at teardown, before the
    namespaces are removed."""
    procs: list[Proc] = []

    def start(argv: list[str]) -> Proc:
        procs.append(Proc(argv))
        return procs[-1]

    yield start
    for proc in procs:
        proc.proc.kill()
        proc.proc.communicate()


def echo_servers(hosts: Hosts, started, which: list[int], root: bool = False) -> None:
    """Echo servers on ECHO_PORT in hosts ``which`` (and the root namespace), listening."""
    servers = {hosts.addresses[i]: started(hosts.command(i, [
        PY, "-c", ECHO, hosts.addresses[i], str(ECHO_PORT)])) for i in which}
    if root:
        servers[hosts.root_address] = started([PY, "-c", ECHO, hosts.root_address,
                                               str(ECHO_PORT)])
    for address, server in servers.items():
        assert server.line(10, f"the echo server on {address} to listen") == "ready"


def reaching(hosts: Hosts, started, i: int | None, addresses: list[str],
             timeout: float) -> Proc:
    """A client echoing to each address's echo server in turn from host ``i`` (None: the
    root namespace), each connection given ``timeout`` seconds."""
    argv = [PY, "-c", REACH, str(timeout), *(f"{a}:{ECHO_PORT}" for a in addresses)]
    return started(argv if i is None else hosts.command(i, argv))


def reached(client: Proc, timeout: float) -> dict[str, str]:
    """What happened to each echo of ``client``, by address: "ok" or the error."""
    lines = client.output(timeout)
    return {target.split(":")[0]: result for target, result in
            (line.split(" ", 1) for line in lines)}


def test_every_host_reaches_every_other_and_the_root_namespace(hosts, started):
    everyone = range(len(hosts.names))
    echo_servers(hosts, started, list(everyone), root=True)
    wanted = {i: [hosts.root_address, *(a for j, a in enumerate(hosts.addresses) if j != i)]
              for i in everyone}
    wanted[None] = hosts.addresses
    clients = {i: reaching(hosts, started, i, addresses, 3) for i, addresses in wanted.items()}
    for i, client in clients.items():
        assert reached(client, 20) == {a: "ok" for a in wanted[i]}, f"from host {i}"


def test_a_cut_cable_is_silent_and_an_established_connection_lives_on_once_healed(
        hosts, started):
    first, second, cut = 0, 1, 2
    echo_servers(hosts, started, [first, second, cut])
    server = started(hosts.command(first, [PY, "-c", PEER, "listen", hosts.addresses[first],
                                           str(PEER_PORT)]))
    assert server.line(10, "the peer in host 0 to listen") == "ready"
    client = started(hosts.command(cut, [PY, "-c", PEER, "connect", hosts.addresses[first],
                                         str(PEER_PORT)]))
    assert client.line(10, "the peer in host 2 to connect") == "connected"
    assert server.line(10, "the peer in host 0 to accept") == "connected"
    for sender, receiver, word in ((client, server, "before"), (server, client, "back")):
        sender.tell(f"send {word}")
        receiver.tell("recv 5")
        assert sender.line(5, "a send before the cut") == "sent"
        assert receiver.line(10, "a receive before the cut") == f"got {word}"

    hosts.cut(cut)
    assert hosts.is_cut(cut) and not hosts.is_cut(first)
    # A new connection to host 2 is neither refused nor failed as unreachable: it goes
    # unanswered, for longer than an unanswered ARP query would take to fail it (3 s).
    to_cut = reaching(hosts, started, second, [hosts.addresses[cut]], 4)
    client.tell("send during")
    server.tell("send during-back")
    assert client.line(5, "a send from host 2, cut") == "sent"  # succeeds locally
    assert server.line(5, "a send to host 2, cut") == "sent"
    client.tell("recv 1")
    server.tell("recv 1")
    across = [reaching(hosts, started, i, [hosts.addresses[j]], 2)  # still talking
              for i, j in ((first, second), (second, first))]
    assert client.line(5, "a receive in host 2, cut") == "timeout 0"  # 0: no socket error
    assert server.line(5, "a receive from host 2, cut") == "timeout 0"
    assert reached(across[0], 10) == {hosts.addresses[second]: "ok"}
    assert reached(across[1], 10) == {hosts.addresses[first]: "ok"}
    assert reached(to_cut, 10) == {hosts.addresses[cut]: "TimeoutError timed out"}

    hosts.heal(cut)
    assert not hosts.is_cut(cut)
    client.tell("recv 10")
    server.tell("recv 10")
    # What was sent during the cut arrives on the same connection: TCP retransmitted it.
    assert client.line(15, "host 2 to receive once healed") == "got during-back"
    assert server.line(15, "host 0 to receive once healed") == "got during"


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def links() -> set[str]:
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in listed.stdout.splitlines()}


def test_remove_leaves_nothing_behind_even_when_half_built(hosts):
    made = {*hosts.names, *hosts.cables, hosts.switch}
    assert made <= namespaces() and hosts.root_device in links()

    # A second set whose fourth cable's namespace already exists fails half-way.
    clash = Hosts()
    clash.cables[3] = hosts.cables[3]
    try:
        with pytest.raises(NetnsUnavailable, match=f"ip netns add {hosts.cables[3]}"):
            clash.create()
        half = {clash.switch, *clash.names[:4], *clash.cables[:3]}
        assert half <= namespaces() and clash.root_device in links()
    finally:
        clash.remove()
    assert not half & namespaces() and clash.root_device not in links()
    assert made <= namespaces(), "removing the failed set touched the other"

    hosts.remove()
    assert not made & namespaces() and hosts.root_device not in links()
    hosts.remove()  # again: nothing left to do, no error
