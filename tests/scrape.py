"""Reading metrics in tests: a process's ``/metrics`` (found from its log line), or a collector
in this process, parsed with prometheus_client's own parser."""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import wait_for

URL = re.compile(r"metrics on (http://\S+/metrics)")


class Scrape:
    """One scrape: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [(s.name, s.labels, s.value)
                        for f in self.families.values() for s in f.samples]

    def names(self) -> set[str]:
        """The names of every sample (``_total``, ``_bucket``, ``_count``... included)."""
        return {name for name, _, _ in self.samples}

    def values(self, metric: str, /, **labels: str) -> list[float]:
        """The values of the samples called ``metric`` whose labels include ``labels``."""
        return [value for n, have, value in self.samples
                if n == metric and all(have.get(k) == v for k, v in labels.items())]

    def value(self, metric: str, /, **labels: str) -> float:
        """The sum of ``values(metric, **labels)``; KeyError if there is no such sample."""
        found = self.values(metric, **labels)
        if not found:
            raise KeyError(f"no sample {metric} {labels} in:\n{self.text[:3000]}")
        return sum(found)


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """``GET url`` (a ``/metrics`` endpoint), parsed."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return Scrape(reply.read().decode())


def collect(*collectors: object) -> Scrape:
    """What a registry of ``collectors`` would serve, in this process."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return Scrape(generate_latest(registry).decode())


def metrics_url_in(log: Path, timeout: float = 20.0) -> str:
    """The URL of the ``metrics on http://...`` line a process logged to ``log``."""
    def found() -> str | None:
        match = URL.search(log.read_text(errors="replace")) if log.exists() else None
        return match.group(1) if match else None
    return wait_for(found, timeout, f"the metrics line in {log}", interval=0.02)
