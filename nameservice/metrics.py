"""Prometheus metrics, shared by every long-running process: name-service nodes, intermediaries
and components (docs/operations.md, "Metrics", lists every metric).

Theory of operation
-------------------
The processes already count what they do (``IntermediaryStats``, ``OutputStats``, a node's
``counters``...). Metrics read those counters **at scrape time**: a process describes its
metrics once, as a table of :class:`Metric` (name, type, help, label names), and gives a
function that returns the current :data:`Sample` values; :class:`TableCollector` turns both into
Prometheus families when ``/metrics`` is scraped. Nothing is added to the hot path for a counter.

Histograms are :class:`Buckets` that the process owns and observes itself, once per batch (a
group of writes, a batch of messages), never per message: ``observe`` is one ``bisect`` and two
additions, several times cheaper than ``prometheus_client.Histogram.observe``, which takes a
lock. A weight (``observe(v, n)``) records a group of ``n`` requests that waited as long.

Threads: the HTTP server answers scrapes in its own threads while the process runs on; samples
read plain integers and sizes (atomic under the GIL) and take copies of the containers they walk.
A container changed during the copy raises ``RuntimeError``: the collector tries again.

Serving: :func:`start_metrics` makes a registry of its own per process (never the global
default one, so that tests run several in one process), registers the collectors and the
standard ``process_*`` collector, and serves ``/metrics`` on ``HOST:PORT`` (port 0: any free
one; the bound address is logged). :func:`metrics_address` reads ``FABRIC_METRICS`` when the
caller was not given an address.

``prometheus_client`` and ``http.server`` are imported only when metrics are served or
collected: importing them takes a tenth of a second, which every command and port (they import
:class:`Buckets`) would pay otherwise.
"""
from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from nameservice.address import parse_control
from nameservice.errors import ConfigError

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)
# The bound address is the one line an operator needs to find the endpoint: shown whatever the
# level the process set for the rest (a level set on this logger by the process wins).
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)

__all__ = ["ENV", "Buckets", "LATENCY_BUCKETS", "Metric", "MetricsServer", "Sample",
           "SIZE_BUCKETS", "TableCollector", "check_metrics_address", "metrics_address",
           "serve_metrics", "start_metrics"]

ENV = "FABRIC_METRICS"
"""``HOST:PORT`` where a process serves ``/metrics`` when no address is given to it."""

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histograms: 100 µs to 10 s."""
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Upper bounds of the histograms of sizes (messages per batch)."""

KINDS = ("counter", "gauge", "histogram")
RETRIES = 5  # reads of the samples when a container changed while it was copied


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric as exported: ``name`` (counters end in ``_total``), ``kind`` (``counter``,
    ``gauge`` or ``histogram``), ``help`` and its label names."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")


class Buckets:
    """A histogram the process owns: counts per bucket and the sum, observed without a lock.

    ``bounds`` are the buckets' upper bounds (inclusive, as Prometheus's ``le``); one more
    bucket counts what exceeds the last. Only one thread observes; a scrape reads a copy.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """Record ``n`` observations of ``value`` (a group that waited as long)."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    @property
    def count(self) -> int:
        """Observations recorded."""
        return sum(self.counts)

    def cumulative(self) -> tuple[list[tuple[float, int]], float]:
        """``([(upper bound, observations <= it)...], sum)``, the last bound ``inf``: a
        consistent copy for a scrape."""
        counts, total = list(self.counts), self.sum
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts):
            running += n
            out.append((bound, running))
        return out, total


Sample = tuple[str, tuple[str, ...], Union[float, Buckets]]
"""``(metric name, label values, value)``: a number, or the :class:`Buckets` of a histogram."""


class TableCollector:
    """A Prometheus collector over a table of :class:`Metric`; ``samples()`` gives the current
    values when it is scraped (see module docstring). Every metric of the table is exported,
    those without a sample as empty families."""

    def __init__(self, metrics: Sequence[Metric], samples: Callable[[], Iterable[Sample]]) -> None:
        self.metrics = {m.name: m for m in metrics}
        if len(self.metrics) != len(metrics):
            raise ValueError("a metric appears twice in the table")
        self._samples = samples

    def describe(self) -> list[Any]:
        return [_family(m) for m in self.metrics.values()]

    def collect(self) -> list[Any]:
        for attempt in range(RETRIES):
            try:
                samples = list(self._samples())
                break
            except RuntimeError:  # a container changed while it was copied: read again
                if attempt == RETRIES - 1:
                    raise
        families = {name: _family(m) for name, m in self.metrics.items()}
        for name, labels, value in samples:
            family = families[name]
            if isinstance(value, Buckets):
                buckets, total = value.cumulative()
                family.add_metric(list(labels), [(_le(b), n) for b, n in buckets], total)
            else:
                family.add_metric(list(labels), value)
        return list(families.values())


def _family(metric: Metric) -> Any:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    kind = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
            "histogram": HistogramMetricFamily}[metric.kind]
    return kind(metric.name, metric.help, labels=list(metric.labels))


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


# ---------------------------------------------------------------------------- serving


def check_metrics_address(address: str | None) -> str | None:
    """A ``--metrics`` value checked (``HOST:PORT``, port 0 for any; ``ConfigError`` if
    malformed); None for none."""
    from nameservice.address import parse_control

    if address:
        parse_control(address)
    return address or None


def metrics_address(given: str | None) -> str | None:
    """The address to serve metrics on: ``given``, else ``FABRIC_METRICS``; None (or empty):
    none."""
    address = given if given is not None else os.environ.get(ENV, "")
    return address.strip() or None


def _handler(registry: Any) -> type[BaseHTTPRequestHandler]:
    from http.server import BaseHTTPRequestHandler

    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    class MetricsHandler(BaseHTTPRequestHandler):
        """``GET /metrics``: the registry in the Prometheus text format; 404 elsewhere."""

        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/metrics/"):
                self.send_error(404, "metrics are served at /metrics")
                return
            try:
                body = generate_latest(registry)
            except Exception as exc:  # a collector's bug must not kill the server thread
                log.exception("collecting metrics failed")
                self.send_error(500, str(exc))
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the process's log

    return MetricsHandler


def serve_metrics(address: str, registry: Any) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``registry`` at ``http://address/metrics`` from a daemon thread; the server and
    the bound ``HOST:PORT`` (port 0 picks a free one). ConfigError on a bad address or one
    that cannot be bound. Stop it with ``shutdown()`` and ``server_close()``."""
    from http.server import ThreadingHTTPServer

    host, port = parse_control(address)
    try:
        server = ThreadingHTTPServer((host, port), _handler(registry))
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
    bound = f"{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="metrics", daemon=True)
    thread.start()
    return server, bound


class MetricsServer:
    """A process's registry and the server of its ``/metrics`` (:func:`start_metrics`)."""

    def __init__(self, registry: Any, server: ThreadingHTTPServer, address: str) -> None:
        self.registry = registry
        self.server = server
        self.address = address
        """The bound ``HOST:PORT``."""

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def close(self) -> None:
        """Stop serving (waits for the server thread's loop to end)."""
        self.server.shutdown()
        self.server.server_close()


def start_metrics(address: str, *collectors: Any) -> MetricsServer:
    """Serve ``collectors`` (and the standard ``process_*`` metrics) on ``address``
    (``HOST:PORT``, see :func:`metrics_address`). Logs ``metrics on http://HOST:PORT/metrics``.
    ConfigError on a bad address or one that cannot be bound."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    server, bound = serve_metrics(address, registry)
    handle = MetricsServer(registry, server, bound)
    log.info("metrics on %s", handle.url)
    return handle
