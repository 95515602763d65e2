"""Where fabric's one-way latency goes: each part of the path measured on its own.

    python benchmarks/latency_probe.py [--repeats R] [--json] [--only NAME,...]

Every case sends 2,000 stamped 100-byte messages at 1,000 msgs/s (as fabric_bench.py's latency
measure) and reports the p50 one-way latency in µs, the median over R interleaved runs (the
machine is shared). Cases:

- ``plain-1hop``: PUSH -> PULL, both blocking (the floor of one ZeroMQ hop on this machine);
- ``recv-asyncio``: PUSH -> PULL received with ``await sock.recv()`` of ``zmq.asyncio``;
- ``recv-reader``: PUSH -> PULL received by fabric's own reader (``fabric.ports.reader``);
- ``raw-inter-raw``: a blocking producer -> 1 intermediary -> a blocking consumer, both
  speaking the fabric protocol by hand (the intermediary's share);
- ``port-inter-raw``: an ``OutputPort`` -> 1 intermediary -> a blocking consumer (adds the
  producer's share);
- ``raw-inter-port``: a blocking producer -> 1 intermediary -> an ``InputPort`` (adds the
  consumer's share);
- ``fabric``: OutputPort -> 2 intermediaries -> InputPort, as in fabric_bench.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fabric_bench as fb  # noqa: E402

COUNT = 2000
RATE = 1000


def _paced(count: int):
    """Yield message numbers at RATE per second (blocking sleeps)."""
    start = fb.now_ns()
    for i in range(count):
        fb._sleep_until(start + i * 1e9 / RATE)
        yield i


# -- roles ------------------------------------------------------------------------------------

def role_push(args) -> None:
    import zmq
    sock = zmq.Context().socket(zmq.PUSH)
    sock.connect(args.endpoints)
    time.sleep(0.3)
    for i in _paced(args.count):
        sock.send(fb.payload(i, True))
    sock.close(linger=-1)


def role_pull(args) -> None:
    import zmq
    sock = zmq.Context().socket(zmq.PULL)
    sock.bind("tcp://127.0.0.1:*")
    fb.emit({"endpoint": sock.last_endpoint.decode()})
    rx = fb.Receiver(args.count, "latency")
    if args.mode == "blocking":
        while not rx.on(sock.recv()):
            pass
    else:
        asyncio.run(_pull_async(sock, rx, args.mode))
    fb.emit(rx.report())


async def _pull_async(sock, rx, mode: str) -> None:
    import zmq.asyncio
    if mode == "asyncio":
        asock = zmq.asyncio.Socket.from_socket(sock)
        while not rx.on(await asock.recv()):
            pass
        return
    from fabric.ports.reader import Reader
    done = asyncio.Event()

    def on_frame(frame: bytes) -> None:
        if rx.on(frame):
            done.set()

    reader = Reader(sock, on_frame)
    await done.wait()
    reader.close()


def _raw_socket(role: int, endpoint: str, credit: int = 0):
    import zmq

    from fabric import protocol as p
    peer_id = os.urandom(p.ID_SIZE)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, (b"P" if role == p.ROLE_PRODUCER else b"C") + peer_id)
    sock.connect(endpoint)
    sock.send(p.encode(p.Hello(role, peer_id, credit, "bench")))
    return sock, peer_id


def _answer_who(sock, frame: bytes, role: int, peer_id: bytes, credit: int = 0) -> None:
    """An intermediary that rebinds (it was starved of CPU long enough to think it was
    frozen) forgets its peers and asks them to say HELLO again."""
    from fabric import protocol as p
    if p.frame_type(frame) == p.T_WHO:
        sock.send(p.encode(p.Hello(role, peer_id, credit, "bench")))


def role_raw_producer(args) -> None:
    from fabric import protocol as p
    sock, pid = _raw_socket(p.ROLE_PRODUCER, args.endpoints)
    time.sleep(0.05)  # the intermediary wants a frame every 300 ms: a batch each ms does
    for i in _paced(args.count):
        while sock.poll(0):
            _answer_who(sock, sock.recv(), p.ROLE_PRODUCER, pid)
        body = p.encode_payloads([fb.payload(i, True)])
        sock.send(p.batch_frame(pid, i, 1, i, body))
    time.sleep(0.2)
    sock.close(linger=0)


def role_raw_consumer(args) -> None:
    from fabric import protocol as p
    sock, cid = _raw_socket(p.ROLE_CONSUMER, args.endpoints, credit=8192)
    fb.emit({"ready": True})
    rx = fb.Receiver(args.count, "latency")
    beat = p.heartbeat_frame()
    while True:
        if not sock.poll(50):
            sock.send(beat)  # silent peers are declared dead
            continue
        frame = sock.recv()
        if p.frame_type(frame) != p.T_BATCH:
            _answer_who(sock, frame, p.ROLE_CONSUMER, cid, credit=8192)
            continue
        batch = p.decode(frame)
        done = any(rx.on(x) for x in p.decode_payloads(batch.body, batch.count))
        ack = p.Ack(batch.producer_id, cid, batch.count, ((batch.first_seq, batch.count),))
        sock.send(p.encode(ack))
        if done:
            break
    fb.emit(rx.report())
    sock.close(linger=0)


# -- cases ------------------------------------------------------------------------------------

def _role(procs: fb.Procs, role: str, **opts):
    argv = [sys.executable, __file__, "--role", role]
    for key, value in opts.items():
        argv += [f"--{key}", str(value)]
    return procs.spawn(argv)


def _bench_role(procs: fb.Procs, role: str, **opts):
    return procs.role(role, **opts)  # a role of fabric_bench.py


def case_pull(mode: str) -> float:
    with fb.Procs(fb.__file__) as procs:  # its roles are fabric_bench.py's
        pull = _role(procs, "pull", mode=mode, count=COUNT)
        endpoint = fb.line(pull)["endpoint"]
        _role(procs, "push", endpoints=endpoint, count=COUNT)
        return fb.line(pull)["p50_us"]


def case_through_intermediary(producer: str, consumer: str) -> float:
    with fb.Procs(fb.__file__) as procs:  # its roles are fabric_bench.py's
        inters, endpoints = fb.start_intermediaries(procs)
        endpoint = endpoints[0]
        if consumer == "raw":
            cons = _role(procs, "raw-consumer", endpoints=endpoint, count=COUNT)
        else:
            cons = _bench_role(procs, "fabric-consumer", endpoints=endpoint, count=COUNT,
                               mode="latency")
        fb.line(cons)
        if producer == "raw":
            _role(procs, "raw-producer", endpoints=endpoint, count=COUNT)
        else:
            _bench_role(procs, "fabric-producer", endpoints=endpoint, count=COUNT,
                        mode="latency", rate=RATE)
        return fb.line(cons)["p50_us"]


CASES = {
    "plain-1hop": lambda: case_pull("blocking"),
    "recv-asyncio": lambda: case_pull("asyncio"),
    "recv-reader": lambda: case_pull("reader"),
    "raw-inter-raw": lambda: case_through_intermediary("raw", "raw"),
    "port-inter-raw": lambda: case_through_intermediary("port", "raw"),
    "raw-inter-port": lambda: case_through_intermediary("raw", "port"),
    "fabric": lambda: fb.run_fabric(COUNT, "latency", rate=RATE)["p50_us"],
}


def _timed_out(*_: object) -> None:
    raise TimeoutError("a case took over 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=COUNT, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="blocking", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        {"push": role_push, "pull": role_pull, "raw-producer": role_raw_producer,
         "raw-consumer": role_raw_consumer}[args.role](args)
        return
    names = args.only.split(",") if args.only else list(CASES)
    runs: dict[str, list[float]] = {name: [] for name in names}
    signal.signal(signal.SIGALRM, _timed_out)
    for _ in range(args.repeats):  # interleaved: every case sees the same machine load
        for name in names:
            signal.alarm(60)
            runs[name].append(CASES[name]())
            print(f"{name}: {runs[name][-1]:.1f} µs", file=sys.stderr, flush=True)
            signal.alarm(0)
    out = {name: round(statistics.median(v), 1) for name, v in runs.items()}
    print("runs: " + json.dumps(runs), file=sys.stderr)
    if args.json:
        print(json.dumps({"p50_us": out, "load": os.getloadavg()[0]}))
    else:
        for name, value in out.items():
            print(f"{name:16} {value:8.1f} µs")


if __name__ == "__main__":
    main()
