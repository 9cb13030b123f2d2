"""Metrics in the Prometheus text format (version 0.0.4), for an operator's scraper.

Two kinds of numbers:
- **events** (bytes moved, cache hits, how long a sync took) are counted where they
  happen, by one-line hooks into ``METRICS`` (a process-wide registry: the hooks sit
  deep in the account, sync and outbox code, which has no other reason to know of an
  exporter);
- **state** (sessions open, accounts online, outbox depth, cache size) is read at scrape
  time by collectors the service registers, so it can never drift from the truth.

Nothing here names a user or a mailbox: the numbers are totals over the process, so a
scrape reveals no more than how busy the proxy is. No passwords or message content are
ever seen by this module.

prometheus_client would do the formatting, but the format is a few lines of text and
the exporter a Twisted Web resource we already have; one dependency less to keep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PREFIX = "imapproxy_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets in seconds: a LAN round trip up to a slow satellite link's minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: A gauge sample: labels (name, value pairs) and the value.
Sample = tuple[tuple[tuple[str, str], ...], float]
Collector = Callable[[], dict[str, list[Sample]]]


@dataclass
class Counter:
    name: str
    help: str
    value: float = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount > 0:
            self.value += amount

    def render(self) -> Iterator[str]:
        yield from _header(self.name, self.help, "counter")
        yield f"{PREFIX}{self.name} {_number(self.value)}"


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the wall time of the block, only if it completes without an error
        (a failed sync's time says how long the link took to fail, not to sync)."""
        started = time.monotonic()
        yield
        self.observe(time.monotonic() - started)

    def render(self) -> Iterator[str]:
        yield from _header(self.name, self.help, "histogram")
        full = f"{PREFIX}{self.name}"
        for bound, seen in zip(self.buckets, self.counts, strict=True):
            yield f'{full}_bucket{{le="{_number(bound)}"}} {seen}'
        yield f'{full}_bucket{{le="+Inf"}} {self.count}'
        yield f"{full}_sum {_number(self.total)}"
        yield f"{full}_count {self.count}"


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str


class Metrics:
    """Every metric of the process; ``render()`` is one scrape."""

    def __init__(self) -> None:
        c, h = self._counter, self._histogram
        self.upstream_bytes = c("upstream_received_bytes_total", "Message data fetched upstream")
        self.client_bytes = c("client_sent_bytes_total", "Message data sent to clients")
        self.cache_hits = c(
            "cache_hits_total", "Messages whose requested content was already in the cache"
        )
        self.cache_misses = c(
            "cache_misses_total", "Messages whose requested content had to be fetched"
        )
        self.sync_seconds = h("sync_seconds", "Time to bring one mailbox up to date upstream")
        self.replay_seconds = h("replay_seconds", "Time to replay one queued change upstream")
        self.gauges = [
            Gauge("sessions", "Client sessions logged in"),
            Gauge("accounts", "Accounts open, by upstream link state"),
            Gauge("upstream_connections", "Upstream connections logged in"),
            Gauge("outbox_queued", "Changes queued for the upstream, all accounts"),
            Gauge("outbox_refused", "Changes the upstream refused, kept for the user"),
            Gauge("cache_bytes", "Message content held in the cache, all accounts"),
        ]
        self._collectors: list[Collector] = []

    def _counter(self, name: str, help: str) -> Counter:
        return Counter(name, help)

    def _histogram(self, name: str, help: str) -> Histogram:
        return Histogram(name, help)

    def add_collector(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def remove_collector(self, collector: Collector) -> None:
        if collector in self._collectors:
            self._collectors.remove(collector)

    def render(self) -> str:
        """The text of one scrape. A collector that fails leaves its gauges out (and
        the scraper sees them missing) rather than failing the whole scrape."""
        samples: dict[str, list[Sample]] = {}
        for collector in list(self._collectors):
            try:
                for name, values in collector().items():
                    samples.setdefault(name, []).extend(values)
            except Exception:
                continue
        lines: list[str] = []
        for gauge in self.gauges:
            if gauge.name not in samples:
                continue
            lines.extend(_header(gauge.name, gauge.help, "gauge"))
            for labels, value in samples[gauge.name]:
                lines.append(f"{PREFIX}{gauge.name}{_labels(labels)} {_number(value)}")
        for counter in (self.upstream_bytes, self.client_bytes, self.cache_hits, self.cache_misses):
            lines.extend(counter.render())
        for histogram in (self.sync_seconds, self.replay_seconds):
            lines.extend(histogram.render())
        return "\n".join(lines) + "\n"


def _header(name: str, help: str, kind: str) -> Iterator[str]:
    yield f"# HELP {PREFIX}{name} {help}"
    yield f"# TYPE {PREFIX}{name} {kind}"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


#: The process's metrics; hooks count into it, the exporter renders it.
METRICS = Metrics()
