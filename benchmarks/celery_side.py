"""Celery side of the task-queue benchmark: no-op task throughput of Celery on Redis.

One call of :func:`run_celery` starts a private ``redis-server`` (loopback, free port, temp dir,
``--appendonly yes --appendfsync everysec --save ""``; also ``client-output-buffer-limit pubsub
0 0 0`` so the client, which reads no results while it submits, is never cut off), starts
``workers`` Celery workers as subprocesses, submits ``tasks`` no-op tasks with ``apply_async``
from one client (one producer reused: ~2x the rate of a pool acquire per call), and waits for
every result through the Redis result backend (``ResultSet.join_native``: ~2x faster than
``AsyncResult.get`` one by one). Timed from the first submit to the last result; then every
result is checked in Redis (status SUCCESS, value ``i``) and the missing ones counted as lost.

Celery settings: broker and result backend = that Redis, ``task_acks_late=True``,
``worker_prefetch_multiplier=1``. Workers: ``--pool=solo`` (the task runs in the worker process
itself, no hand-off to a pool child: Celery's fastest no-op pool at one task at a time; prefork
``-c 1`` measured slower), with ``--without-gossip --without-mingle --without-heartbeat``.
``concurrency > 1`` switches to ``--pool=prefork -c N``.

Not a project dependency. Install the pieces: ``apt-get install redis-server`` and
``pip install celery redis``. Run: ``cd benchmarks && python celery_side.py --tasks 10000``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import celery
    import redis
    from celery import Celery
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import ResultSet
except ImportError:  # available() says why
    celery = redis = Celery = ResultSet = CeleryTimeout = None

HERE = Path(__file__).resolve().parent
URL_ENV = "CELERY_SIDE_URL"
TASK = "celery_side.noop"


def available() -> str | None:
    """None when celery, redis and ``redis-server`` are there; else a one-line reason."""
    if celery is None or redis is None:
        return "python packages celery and redis not installed (pip install celery redis)"
    if shutil.which("redis-server") is None:
        return "redis-server not on PATH (apt-get install redis-server)"
    return None


def make_app(url: str) -> Celery:
    """A Celery app with broker and result backend at ``url`` and the task ``noop``."""
    app = Celery("celery_side", broker=url, backend=url)
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1,
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

    @app.task(name=TASK, shared=False)
    def noop(i: int) -> int:
        return i

    return app


# The worker's ``-A`` target; the URL reaches the worker subprocess through the environment.
app = make_app(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0")) if Celery else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _stop(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM each child's process group, SIGKILL what is left after ``grace`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start_redis(tmp: Path, port: int, procs: list[subprocess.Popen]) -> redis.Redis:
    """A private redis-server in ``tmp`` on ``port``, answering PING."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--client-output-buffer-limit", "pubsub 0 0 0", "--logfile", "redis.log"]
    procs.append(subprocess.Popen(argv, cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True))
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                log = _tail(tmp / "redis.log")
                raise RuntimeError(f"redis-server did not start: {log}") from None
            time.sleep(0.02)


def _start_workers(app: Celery, url: str, workers: int, concurrency: int, tmp: Path,
                   procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    """``workers`` Celery workers; returns when each answers a control ping."""
    pool = ["--pool=solo"] if concurrency == 1 else ["--pool=prefork", f"-c{concurrency}"]
    env = dict(os.environ, **{URL_ENV: url},
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    names = {f"w{i}@celery-side" for i in range(workers)}
    for name in sorted(names):
        argv = [sys.executable, "-m", "celery", "-A", "celery_side:app", "worker", *pool,
                "-n", name, "--loglevel=WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        with open(tmp / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(argv, cwd=HERE, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while not names <= seen:
        for proc in procs[1:]:
            if proc.poll() is not None:
                logs = "".join(_tail(p) for p in tmp.glob("w*.log"))
                raise RuntimeError(f"celery worker exited with {proc.returncode}: {logs}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"celery workers not ready in {timeout}s: {names - seen}")
        for reply in app.control.ping(timeout=0.5):
            seen.update(reply)


def _count_ok(app: Celery, client: redis.Redis, ids: list[str]) -> int:
    """How many of the tasks ``ids`` (task i returns i) have a correct result in Redis."""
    ok = 0
    for start in range(0, len(ids), 5000):
        keys = [app.backend.get_key_for_task(tid) for tid in ids[start:start + 5000]]
        for i, raw in enumerate(client.mget(keys), start):
            if raw is not None:
                meta = json.loads(raw)
                ok += meta.get("status") == "SUCCESS" and meta.get("result") == i
    return ok


def run_celery(tasks: int = 10000, workers: int = 3, *, concurrency: int = 1) -> dict:
    """Throughput of ``tasks`` no-op Celery tasks on ``workers`` workers (see module doc)."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="celery-side-") as tmpdir:
        tmp = Path(tmpdir)
        bench = None
        try:
            port = _free_port()
            client = _start_redis(tmp, port, procs)
            url = f"redis://127.0.0.1:{port}/0"
            bench = make_app(url)
            noop = bench.tasks[TASK]
            _start_workers(bench, url, workers, concurrency, tmp, procs)
            timeout = max(60.0, tasks / 100)
            with bench.producer_or_acquire() as producer:  # one producer: ~2x the submit rate
                t0 = time.perf_counter()
                results = [noop.apply_async((i,), producer=producer) for i in range(tasks)]
                t_submit = time.perf_counter()
            try:
                ResultSet(results).join_native(timeout=timeout)
            except CeleryTimeout:
                pass  # counted as lost below
            t_done = time.perf_counter()
            lost = tasks - _count_ok(bench, client, [r.id for r in results])
            for result in results:  # unsubscribe the unfinished while Redis is up
                bench.backend.remove_pending_result(result)
            return {
                "celery_tasks_s": round(tasks / (t_done - t0), 1),
                "celery_submit_s": round(tasks / (t_submit - t0), 1),
                "celery_lost": lost,
                "celery_workers": workers,
                "celery_version": celery.__version__,
                "redis_version": client.info("server")["redis_version"],
            }
        finally:
            _stop(procs[1:])  # workers first, while their broker is still up
            if bench is not None:
                bench.close()
            _stop(procs[:1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally clauses run
    print(json.dumps(run_celery(args.tasks, args.workers, concurrency=args.concurrency)))


if __name__ == "__main__":
    main()
