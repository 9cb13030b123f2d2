"""One measured session on one path (direct or through the proxy), and their medians.

A ``Sample`` holds what one session cost; a ``Row`` pairs the medians of the direct
and proxy samples of one (mailbox size, session kind) so the report can print ratios.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

SETTLE_QUIET = 0.3
SETTLE_MAX = 3.0


class Counted(Protocol):
    """A link that counts what crossed it (``bench.link.Link``, ``tests.support.relay.Relay``)."""

    @property
    def bytes_up(self) -> int: ...

    @property
    def bytes_down(self) -> int: ...


@dataclass
class Sample:
    """Cost of one session. Proxy-only fields stay None for the direct path."""

    wall_s: float
    #: ``wall_s`` minus the client parsing the message list (see workload.PHASES).
    server_s: float
    phases: dict[str, float]
    bytes_down: int
    bytes_up: int
    proxy_cpu_s: float | None = None
    #: The proxy process's RSS when it became ready, before any client: its baseline.
    start_rss_kib: int | None = None
    peak_rss_kib: int | None = None
    state_dir_bytes: int | None = None


@dataclass
class Row:
    """Medians over the repeats of one (size, session) pair, plus the raw samples."""

    size: int
    session: str
    rtt_ms: float = 0.0
    direct: list[Sample] = field(default_factory=list)
    proxy: list[Sample] = field(default_factory=list)

    def median(self, path: str, name: str) -> float | None:
        samples = self.direct if path == "direct" else self.proxy
        values = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        return statistics.median(values) if values else None

    def median_phase(self, path: str, phase: str) -> float:
        samples = self.direct if path == "direct" else self.proxy
        return statistics.median(s.phases.get(phase, 0.0) for s in samples)

    def ratio(self, name: str = "wall_s") -> float | None:
        """Proxy median over direct median of ``name`` (``wall_s`` or ``server_s``)."""
        direct, proxy = self.median("direct", name), self.median("proxy", name)
        return proxy / direct if direct and proxy is not None else None

    def to_json(self) -> dict[str, Any]:
        medians: dict[str, dict[str, Any]] = {
            path: {
                name: self.median(path, name)
                for name in (
                    "wall_s",
                    "server_s",
                    "bytes_down",
                    "bytes_up",
                    "proxy_cpu_s",
                    "start_rss_kib",
                    "peak_rss_kib",
                    "state_dir_bytes",
                )
            }
            for path in ("direct", "proxy")
        }
        for path in ("direct", "proxy"):
            phases = (self.direct if path == "direct" else self.proxy)[0].phases
            medians[path]["phases"] = {p: self.median_phase(path, p) for p in phases}
        return {
            "size": self.size,
            "rtt_ms": self.rtt_ms,
            "session": self.session,
            "ratio_proxy_over_direct": self.ratio("wall_s"),
            "ratio_proxy_over_direct_without_client_parse": self.ratio("server_s"),
            "median": medians,
            "samples": {
                "direct": [asdict(s) for s in self.direct],
                "proxy": [asdict(s) for s in self.proxy],
            },
        }


def settle(relay: Counted) -> None:
    """Wait (bounded) until no bytes have crossed ``relay`` for a moment.

    The proxy may still talk upstream right after the client's LOGOUT (entering IDLE,
    finishing a write-back); counting that traffic keeps the byte figures honest.
    """
    deadline = time.monotonic() + SETTLE_MAX
    last = (relay.bytes_down, relay.bytes_up)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = (relay.bytes_down, relay.bytes_up)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET:
            return
