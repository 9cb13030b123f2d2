"""Benchmark imapproxy against direct Dovecot access with the same client workload.

Run from the repository root: ``.venv/bin/python -m bench.run [--sizes 2000,10000]
[--bodies 50] [--repeat 1] [--out bench/results/latest.json]``. See bench/README.md
for what is measured and how to read the figures.

Both paths count bytes with the same kind of relay: direct, the client talks to Dovecot
through one; through the proxy, the proxy's upstream link goes through another, so the
"upstream" bytes are exactly what the proxy costs the real server and the network.
"""

from __future__ import annotations

import argparse
import imaplib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstats
from bench.accounts import BenchUser, seed_user
from bench.compare import Comparison, compare
from bench.measure import Row, Sample, settle
from bench.report import machine_facts, phase_table, summary_table, write_json
from bench.workload import Answers, run_session
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

COLD, WARM, RESTARTED = "1 cold", "2 warm", "2 restarted"
#: Proxy log lines worth surfacing in the report.
LOG_ALARMS = (" ERROR ", " CRITICAL ", "Traceback", " WARNING ")


@dataclass
class Paths:
    """The two routes to Dovecot: the client's relay (direct) and the proxy's upstream relay."""

    dovecot: Dovecot
    direct: Relay
    upstream: Relay

    @property
    def upstream_url(self) -> str:
        return f"imap+plain://{self.upstream.host}:{self.upstream.port}"


@dataclass
class Outcome:
    """Everything a run produced: the rows to report and the correctness findings."""

    rows: dict[tuple[int, str], Row] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    def row(self, size: int, session: str) -> Row:
        return self.rows.setdefault((size, session), Row(size, session))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=[2000, 10000], help="INBOX sizes, comma separated"
    )
    parser.add_argument("--bodies", type=int, default=50, help="full bodies read per session")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument(
        "--no-restart", action="store_true", help="skip session 2 on a restarted proxy"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.bodies < 0:
        parser.error("--repeat must be positive and --bodies not negative")
    return args


def _sizes(text: str) -> list[int]:
    """``--sizes 2000,10000`` as a list of positive ints (argparse reports a ValueError)."""
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise ValueError(text)
    return sizes


def _log(message: str) -> None:
    """Progress on stderr, so stdout carries only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _direct(paths: Paths, user: BenchUser, bodies: int) -> tuple[Sample, Answers]:
    relay = paths.direct
    relay.reset_counters()
    result = run_session(relay.host, relay.port, user.name, user.password, bodies)
    settle(relay)
    sample = Sample(
        result.wall, result.server_wall, result.phases, relay.bytes_down, relay.bytes_up
    )
    return sample, result.answers


@dataclass
class RunningProxy:
    """A started proxy and its resident memory when it became ready (the idle baseline)."""

    process: ProxyProcess
    start_rss_kib: int

    @classmethod
    def start(cls, paths: Paths, state_dir: Path) -> RunningProxy:
        process = ProxyProcess(paths.upstream_url, state_dir).start()
        assert process.pid is not None
        return cls(process, procstats.rss_kib(process.pid))


def _proxied(
    paths: Paths, running: RunningProxy, user: BenchUser, bodies: int
) -> tuple[Sample, Answers]:
    relay, proxy = paths.upstream, running.process
    pid = proxy.pid
    assert pid is not None
    relay.reset_counters()
    cpu_before = procstats.cpu_seconds(pid)
    result = run_session(proxy.host, proxy.port, user.name, user.password, bodies)
    settle(relay)
    sample = Sample(
        result.wall,
        result.server_wall,
        result.phases,
        relay.bytes_down,
        relay.bytes_up,
        proxy_cpu_s=procstats.cpu_seconds(pid) - cpu_before,
        start_rss_kib=running.start_rss_kib,
        peak_rss_kib=procstats.peak_rss_kib(pid),
        state_dir_bytes=procstats.disk_usage_bytes(proxy.state_dir),
    )
    return sample, result.answers


def _record(outcome: Outcome, label: str, comparison: Comparison) -> None:
    outcome.problems += [f"{label}: {p}" for p in comparison.problems]
    outcome.notes.update(comparison.notes)


def _session_pair(
    paths: Paths,
    proxy: RunningProxy,
    user: BenchUser,
    session: str,
    bodies: int,
    outcome: Outcome,
) -> None:
    """Run the workload directly and through ``proxy``, record both, compare answers.

    A proxy that refuses or drops the workload is a finding, not a crash of the
    benchmark: it is recorded as a problem (failing the run) and the next session runs.
    """
    label = f"N={user.inbox_size} {session}"
    direct, direct_answers = _direct(paths, user, bodies)
    try:
        proxied, proxy_answers = _proxied(paths, proxy, user, bodies)
    except (imaplib.IMAP4.error, OSError) as exc:
        outcome.problems.append(f"{label}: session through the proxy failed: {exc!r}")
        _log(f"{label}: proxy session failed: {exc!r}")
        return
    row = outcome.row(user.inbox_size, session)
    row.direct.append(direct)
    row.proxy.append(proxied)
    _record(outcome, label, compare(direct_answers, proxy_answers))
    _log(
        f"{label}: direct {direct.wall_s:.2f}s, "
        f"proxy {proxied.wall_s:.2f}s, upstream {proxied.bytes_down} B down"
    )


def _stop(proxy: ProxyProcess, outcome: Outcome) -> None:
    """Stop the proxy; an unclean exit or a logged error is a proxy problem worth reporting.

    Logged errors are notes, not failures: the answers were checked separately, and a
    benchmark should not fail on a log line. They still deserve a reader's attention.
    """
    code = proxy.stop()
    if code != 0:
        outcome.problems.append(f"proxy exited with {code}:\n{proxy.log_tail(20)}")
    for line in proxy.log_text().splitlines():
        if any(marker in line for marker in LOG_ALARMS):
            outcome.notes.add(f"proxy log: {line.strip()[:300]}")


def _one_repeat(
    paths: Paths, user: BenchUser, state_dir: Path, args: argparse.Namespace, outcome: Outcome
) -> None:
    """Cold and warm session on one proxy process, then optionally warm after a restart."""
    proxy = RunningProxy.start(paths, state_dir)
    try:
        _session_pair(paths, proxy, user, COLD, args.bodies, outcome)
        _session_pair(paths, proxy, user, WARM, args.bodies, outcome)
    finally:
        _stop(proxy.process, outcome)
    if args.no_restart:
        return
    try:
        restarted = RunningProxy.start(paths, state_dir)
    except RuntimeError as exc:  # a replica the proxy cannot reopen is a finding
        outcome.problems.append(f"N={user.inbox_size}: proxy failed to restart: {exc}")
        return
    try:
        _session_pair(paths, restarted, user, RESTARTED, args.bodies, outcome)
    finally:
        _stop(restarted.process, outcome)


def _bench_size(
    paths: Paths, size: int, workdir: Path, args: argparse.Namespace, outcome: Outcome
) -> None:
    """Seed the size's account, warm Dovecot up, then run every repeat on a new state dir."""
    _log(f"N={size}: seeding")
    user = seed_user(paths.dovecot, size)
    # An untimed direct pass first, so Dovecot's own cache file is built before either
    # path is timed; otherwise whichever path ran first would pay for it.
    _log(f"N={size}: warming Dovecot up")
    run_session(paths.direct.host, paths.direct.port, user.name, user.password, args.bodies)
    for repeat in range(args.repeat):
        state_dir = workdir / f"state-{size}-{repeat}"
        _one_repeat(paths, user, state_dir, args, outcome)
        if not args.keep:
            shutil.rmtree(state_dir, ignore_errors=True)


@contextmanager
def _environment(workdir: Path) -> Iterator[Paths]:
    """Dovecot plus the two relays, torn down in reverse order."""
    with (
        Dovecot(directory=workdir / "dovecot") as dovecot,
        Relay(dovecot.host, dovecot.port) as direct,
        Relay(dovecot.host, dovecot.port) as upstream,
    ):
        yield Paths(dovecot, direct, upstream)


def _report(outcome: Outcome, args: argparse.Namespace, started: float) -> dict[str, object]:
    rows = list(outcome.rows.values())
    print(summary_table(rows))
    print()
    print("Seconds per phase (median):")
    print(phase_table(rows))
    print()
    if outcome.problems:
        print("FAILED: the proxy's answers or behaviour differ from Dovecot's (exit status 1)")
    else:
        print("OK: proxy answers equal direct answers")
    for line in outcome.problems:
        print(f"  {line}")
    for note in sorted(outcome.notes):
        print(f"  note: {note}")
    return {
        "machine": machine_facts(),
        "config": {"sizes": args.sizes, "bodies": args.bodies, "repeat": args.repeat},
        "total_seconds": time.monotonic() - started,
        "correct": not outcome.problems,
        "problems": outcome.problems,
        "notes": sorted(outcome.notes),
        "rows": [row.to_json() for row in rows],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    # Under /tmp: Dovecot's mail user must be able to traverse every parent directory.
    workdir = Path(tempfile.mkdtemp(prefix="imapproxy-bench-"))
    workdir.chmod(0o755)
    outcome = Outcome()
    try:
        with _environment(workdir) as paths:
            for size in args.sizes:
                _bench_size(paths, size, workdir, args, outcome)
    finally:
        if args.keep:
            _log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document = _report(outcome, args, started)
    write_json(args.out, document)
    _log(f"wrote {args.out} ({document['total_seconds']:.0f}s in all)")
    return 0 if document["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
