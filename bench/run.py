"""Benchmark imapproxy against direct Dovecot access, across an emulated network link.

Run from the repository root: ``.venv/bin/python -m bench.run [--sizes 1000,10000]
[--rtt 0,50] [--bandwidth MBIT] [--repeat 1] [--scenarios sessions,resync,push]``, or
``--quick`` for a smoke test. See bench/README.md for what is measured and how to read
the figures.

Both paths cross the same kind of link (``bench.link``): direct, the client talks to
Dovecot through one; through the proxy, the proxy's upstream connection goes through
another with the same round-trip time and cap, so the "upstream" bytes are exactly what
the proxy costs the real server and the network, and the time ratio is fair.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.link import LinkProcess, Profile
from bench.report import machine_facts, write_json
from bench.scenario import REGISTRY, Bench, Context, Outcome, Scenario, log
from imapproxy.account import SYNC_INTERVAL_ENV
from tests.support.dovecot import Dovecot

#: Modules that register scenarios, in the order they run and report.
SCENARIO_MODULES = ("bench.sessions", "bench.resync", "bench.push", "bench.replay")
QUICK = {
    "sizes": [200], "rtt": [0.0, 20.0], "bodies": 5, "push_timeout": 5.0, "replay_changes": 100,
}  # fmt: skip
DEFAULTS = {
    "sizes": [1000, 10000], "rtt": [0.0, 50.0], "bodies": 50, "push_timeout": 90.0,
    "replay_changes": 1000,
}  # fmt: skip


def _load_scenarios() -> dict[str, Scenario]:
    for module in SCENARIO_MODULES:
        __import__(module)
    return REGISTRY


def _numbers(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> list[Any]:
        """``1000,10000`` as a list of non-negative numbers (argparse reports a ValueError)."""
        values = [kind(part) for part in text.split(",") if part.strip()]
        if not values or min(values) < 0:
            raise ValueError(text)
        return values

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    scenarios = _load_scenarios()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_numbers(int), help="INBOX sizes (default 1000,10000)")
    parser.add_argument("--rtt", type=_numbers(float), help="round-trip times in ms (default 0,50)")
    parser.add_argument(
        "--bandwidth", type=float, help="link cap in Mbit/s each way (default none)"
    )
    parser.add_argument("--bodies", type=int, help="full bodies read per session (default 50)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument(
        "--scenarios",
        default=",".join(scenarios),
        help=f"comma separated, from: {', '.join(f'{s.name} ({s.help})' for s in scenarios.values())}",
    )
    parser.add_argument(
        "--push-timeout", type=float, help="seconds to wait for pushed news (default 90)"
    )
    parser.add_argument(
        "--replay-changes", type=int, help="changes queued offline for replay (default 1000)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: N=200, rtt 0,20, 5 bodies, push timeout 5 s (explicit options win)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument(
        "--no-restart", action="store_true", help="skip session 2 on a restarted proxy"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--background",
        type=float,
        metavar="SECONDS",
        help="run the proxies' background sync and prefetch every SECONDS, as "
        "`imapproxy serve` does (every 300 s by default); default: off, the client's "
        "workload alone",
    )
    parser.add_argument(
        "--encrypt",
        action="store_true",
        help="run every proxy with --encrypt (replicas encrypted at rest), to measure its cost",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in scenarios]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(scenarios)}")
    if args.replay_changes < 20:
        parser.error("--replay-changes must be at least 20 (the mix needs one of each kind)")
    if args.repeat < 1 or args.bodies < 0 or min(args.sizes) < 1 or args.push_timeout <= 0:
        parser.error("--repeat and --sizes must be positive, --bodies not negative")
    if args.bandwidth is not None and args.bandwidth <= 0:
        parser.error("--bandwidth must be positive")
    if args.background is not None and args.background <= 0:
        parser.error("--background must be positive (leave it out for none)")
    return args


def _calibrate(link: LinkProcess) -> float:
    """Median seconds of a pre-login CAPABILITY across ``link``: the RTT as a client sees it."""
    with socket.create_connection((link.host, link.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        times = []
        for i in range(5):
            start = time.perf_counter()
            sock.sendall(f"c{i} CAPABILITY\r\n".encode())
            while not reader.readline().startswith(f"c{i} ".encode()):
                pass
            times.append(time.perf_counter() - start)
        sock.sendall(b"z LOGOUT\r\n")
    return statistics.median(times)


def _run_scenario(scenario: Scenario, ctx: Context) -> None:
    """One scenario call; a crash is a finding for the report, not the end of the run."""
    try:
        scenario.run(ctx)
    except Exception as exc:
        ctx.problem(f"scenario {scenario.name} failed: {exc!r}")
        traceback.print_exc(file=sys.stderr)


def _run_profile(bench: Bench, profile: Profile, scenarios: list[Scenario]) -> None:
    dovecot = bench.dovecot
    with (
        LinkProcess(dovecot.host, dovecot.port, profile) as direct,
        LinkProcess(dovecot.host, dovecot.port, profile) as upstream,
    ):
        measured = _calibrate(direct)
        bench.outcome.records.setdefault("link", []).append(
            {
                "profile": profile.describe(),
                "rtt_ms": profile.rtt_s * 1000,
                "measured_round_trip_ms": measured * 1000,
            }
        )
        log(f"link {profile.describe()}: a CAPABILITY round trip takes {measured * 1000:.1f} ms")
        for size in bench.args.sizes:
            for scenario in scenarios:
                if scenario.per_size:
                    _run_scenario(scenario, Context(bench, profile, direct, upstream, size))
        for scenario in scenarios:
            if not scenario.per_size:
                _run_scenario(scenario, Context(bench, profile, direct, upstream))


def _report(outcome: Outcome, args: argparse.Namespace, started: float) -> dict[str, object]:
    for link in outcome.records.get("link", []):
        print(
            f"Link {link['profile']}: a CAPABILITY round trip to Dovecot across it took "
            f"{link['measured_round_trip_ms']:.1f} ms (median of 5)"
        )
    print()
    for name in args.scenarios:
        text = REGISTRY[name].report(outcome)
        if text:
            print(text)
            print()
    if outcome.problems:
        print("FAILED: the proxy's answers or behaviour differ from Dovecot's (exit status 1)")
    else:
        print("OK: proxy answers equal direct answers")
    for line in outcome.problems:
        print(f"  {line}")
    for note in sorted(outcome.notes):
        print(f"  note: {note}")
    config = {
        k: getattr(args, k)
        for k in (
            "sizes",
            "rtt",
            "bandwidth",
            "bodies",
            "repeat",
            "scenarios",
            "push_timeout",
            "replay_changes",
        )
    }
    config["background_sync_interval"] = os.environ[SYNC_INTERVAL_ENV]
    return {
        "machine": machine_facts(),
        "command": " ".join(["python -m bench.run", *args.argv]),
        "config": config,
        "total_seconds": time.monotonic() - started,
        "correct": not outcome.problems,
        "problems": outcome.problems,
        "notes": sorted(outcome.notes),
        "rows": [row.to_json() for row in outcome.rows.values()],
        "records": outcome.records,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # The proxy's background sync and prefetch would download, during a session, what
    # the session itself does not ask for; these scenarios measure the client's
    # workload alone (bench/offline.py measures the background sync), unless
    # --background asks for the proxy as it runs by default.
    if args.background is not None:
        os.environ[SYNC_INTERVAL_ENV] = f"{args.background:g}"
    os.environ.setdefault(SYNC_INTERVAL_ENV, "0")
    started = time.monotonic()
    scenarios = [REGISTRY[name] for name in args.scenarios]
    bandwidth = None if args.bandwidth is None else args.bandwidth * 1e6
    # Under /tmp: Dovecot's mail user must be able to traverse every parent directory.
    workdir = Path(tempfile.mkdtemp(prefix="imapproxy-bench-"))
    workdir.chmod(0o755)
    outcome = Outcome()
    try:
        with Dovecot(directory=workdir / "dovecot") as dovecot:
            bench = Bench(args, dovecot, workdir, outcome)
            for rtt_ms in args.rtt:
                _run_profile(bench, Profile(rtt_ms / 1000, bandwidth), scenarios)
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document = _report(outcome, args, started)
    write_json(args.out, document)
    log(f"wrote {args.out} ({document['total_seconds']:.0f}s in all)")
    return 0 if document["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
