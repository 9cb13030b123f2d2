"""What a benchmark run is made of: scenarios in a small registry, and what they share.

A scenario is one function that measures one thing (the client workload side by side,
a resync, push latency, ...) and one function that prints its table. ``bench.run``
calls every selected scenario once per link profile (``--rtt``, ``--bandwidth``) and,
for scenarios that depend on the mailbox size, once per ``--sizes`` entry, each time
with a ``Context`` that holds the Dovecot, the two emulated links and helpers to seed
accounts and to start proxies. To add one::

    def run(ctx: Context) -> None:          # measure; ctx.record(...) what you found
        ...
    def report(outcome: Outcome) -> str:    # a table of outcome.records["name"]
        ...
    register(Scenario("name", "one line of help", run, report))

in a module of ``bench/``, then list that module in ``bench.run.SCENARIO_MODULES``.
Findings that make the proxy wrong (different answers, a crash) go to
``ctx.problem(...)`` and fail the run; figures go to ``ctx.record(...)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstats
from bench.accounts import BenchUser, seed_user
from bench.link import LinkProcess, Profile
from bench.measure import Row
from bench.workload import run_session
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

#: Proxy log lines worth surfacing in the report.
LOG_ALARMS = (" ERROR ", " CRITICAL ", "Traceback", " WARNING ")


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    """Everything a run produced: session rows, scenario records, and correctness findings."""

    #: The side-by-side workload, per (size, rtt in ms, session kind).
    rows: dict[tuple[int, float, str], Row] = field(default_factory=dict)
    #: Per scenario name, JSON-ready records (one per measurement).
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    def row(self, size: int, rtt_ms: float, session: str) -> Row:
        return self.rows.setdefault((size, rtt_ms, session), Row(size, session, rtt_ms))


@dataclass
class RunningProxy:
    """A started proxy and its resident memory when it became ready (the idle baseline)."""

    process: ProxyProcess
    start_rss_kib: int

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


@dataclass
class Bench:
    """Run-wide state: the options, Dovecot, the work directory and the seeded accounts."""

    args: argparse.Namespace
    dovecot: Dovecot
    workdir: Path
    outcome: Outcome
    users: dict[tuple[str, int], BenchUser] = field(default_factory=dict)

    def user(self, purpose: str, size: int) -> BenchUser:
        """The account ``<purpose><size>``, seeded and warmed up on first use.

        Each purpose has its own account, so a scenario that changes mail (resync)
        never changes what another scenario measures. The untimed direct pass builds
        Dovecot's own cache file, which whichever path ran first would pay for.
        """
        key = (purpose, size)
        if key not in self.users:
            log(f"seeding {purpose}{size}")
            started = time.monotonic()
            user = seed_user(self.dovecot, size, name=f"{purpose}{size}")
            run_session(self.dovecot.host, self.dovecot.port, user.name, user.password, 0)
            log(f"seeded {purpose}{size} in {time.monotonic() - started:.1f}s")
            self.users[key] = user
        return self.users[key]


@dataclass
class Context:
    """What one scenario call gets: the run, the link profile, both links, maybe a size."""

    bench: Bench
    profile: Profile
    #: client <-> Dovecot, for the direct path.
    direct: LinkProcess
    #: proxy <-> Dovecot, the proxy's upstream.
    upstream: LinkProcess
    size: int | None = None

    @property
    def args(self) -> argparse.Namespace:
        return self.bench.args

    @property
    def rtt_ms(self) -> float:
        return self.profile.rtt_s * 1000

    @property
    def label(self) -> str:
        size = "" if self.size is None else f"N={self.size} "
        return f"{size}rtt={self.rtt_ms:g}ms"

    def start_proxy(self, name: str, via: tuple[str, int] | None = None) -> RunningProxy:
        """A proxy on ``state_dir`` ``name`` (kept between calls: restart = same name).

        ``via``: the (host, port) the proxy takes for its upstream instead of the
        upstream link, e.g. a relay in front of it that a scenario can cut."""
        state_dir = self.bench.workdir / f"state-{name}"
        host, port = via or (self.upstream.host, self.upstream.port)
        extra = ("--encrypt",) if getattr(self.args, "encrypt", False) else ()
        process = ProxyProcess(f"imap+plain://{host}:{port}", state_dir, extra_args=extra).start()
        assert process.pid is not None
        return RunningProxy(process, procstats.rss_kib(process.pid))

    def stop_proxy(self, proxy: RunningProxy) -> None:
        """Stop it; an unclean exit is a problem, a logged error a note for the reader."""
        code = proxy.process.stop()
        if code != 0:
            self.problem(f"proxy exited with {code}:\n{proxy.process.log_tail(20)}")
        for line in proxy.process.log_text().splitlines():
            if any(marker in line for marker in LOG_ALARMS):
                self.bench.outcome.notes.add(f"proxy log: {line.strip()[:300]}")

    def record(self, scenario: str, **fields: Any) -> None:
        entry = {"size": self.size, "rtt_ms": self.rtt_ms, **fields}
        self.bench.outcome.records.setdefault(scenario, []).append(entry)

    def problem(self, text: str) -> None:
        self.bench.outcome.problems.append(f"{self.label}: {text}")
        log(f"{self.label}: PROBLEM {text.splitlines()[0]}")


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    run: Callable[[Context], None]
    report: Callable[[Outcome], str]
    #: False: run once per link profile (not per size), with ``ctx.size`` None.
    per_size: bool = True


REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in REGISTRY:
        raise ValueError(f"scenario {scenario.name!r} registered twice")
    REGISTRY[scenario.name] = scenario
    return scenario


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def group(records: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Records grouped by the values of ``keys``, in first-seen order (for median tables)."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(tuple(record.get(k) for k in keys), []).append(record)
    return out
