"""Load test: many concurrent sessions over many accounts through one imapproxy.

Run from the repository root: ``.venv/bin/python -m bench.load [--sessions 200]
[--accounts 50] [--duration 180] [--rtt 0]``, or ``--quick`` (20 sessions over 5
accounts for 20 s). See bench/README.md ("Load test").

A private Dovecot gets ``--accounts`` seeded accounts (``bench.accounts`` folders, an
INBOX of ``--inbox`` messages); one ``imapproxy serve`` sits in front of it (across an
emulated link when ``--rtt`` is above 0); ``--sessions`` real IMAP clients
(``bench.load_session``), spread round-robin over the accounts and run as threads of
``--workers`` processes, loop a mixed read/write workload for ``--duration`` seconds.
Reported: throughput, per-command count, p50/p95/p99 latency and errors, the proxy's
CPU seconds, peak and final RSS, and each client worker's CPU use (near one full core
would mean the client, not the proxy, set the pace). Then, once the proxy's outbox has
drained (read from the state dir as ``imapproxy status --json`` reads it), Dovecot's own
state is checked against what every session did (``bench.load_check``). The exit status
is 1 if anything was lost or duplicated, a command failed, a session hung, or the proxy
exited uncleanly.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procstats
from bench.accounts import OTHER_FOLDERS
from bench.link import LinkProcess, Profile
from bench.load_check import check_account
from bench.load_session import SessionSpec, worker_main
from bench.report import human_bytes, machine_facts, table, write_json
from bench.scenario import LOG_ALARMS, log
from imapproxy import status_report
from tests.support.corpus import make_messages, open_mailboxes, seed_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

DEFAULTS = {"sessions": 200, "accounts": 50, "duration": 180.0, "inbox": 200, "workers": 4}
QUICK = {"sessions": 20, "accounts": 5, "duration": 20.0, "inbox": 60, "workers": 2}
#: How long the outbox may take to drain after the sessions end before that is a problem.
DRAIN_TIMEOUT = 120.0
#: Logins are spread over this share of the run (at most 10 s), as clients start apart.
RAMP_SHARE = 0.1


class LoadDovecot(Dovecot):
    """The fixture's Dovecot with room for a gateway's upstream connections.

    Dovecot's ``default_process_limit`` (100) caps the imap processes, one per
    connection: 50 accounts with two or three upstream connections each exceed it, and
    Dovecot would queue logins rather than refuse them, which would read as proxy latency.
    """

    def _prepare_files(self) -> None:
        super()._prepare_files()
        with self.paths.conf.open("a", encoding="utf-8") as conf:
            conf.write("\ndefault_process_limit = 2000\ndefault_client_limit = 4000\n")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default 200)")
    parser.add_argument("--accounts", type=int, help="accounts they share (default 50)")
    parser.add_argument("--duration", type=float, help="seconds of load (default 180)")
    parser.add_argument("--rtt", type=float, default=0.0, help="ms of round trip proxy<->Dovecot")
    parser.add_argument("--inbox", type=int, help="INBOX messages per account (default 200)")
    parser.add_argument("--workers", type=int, help="client processes (default 4)")
    parser.add_argument(
        "--think", type=float, default=0.05, help="mean pause in s after each step (default 0.05)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 sessions, 5 accounts, 20 s (explicit options win)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.sessions, args.accounts, args.inbox, args.workers) < 1 or args.duration <= 0:
        parser.error("--sessions, --accounts, --inbox, --workers and --duration must be positive")
    if args.accounts > args.sessions:
        parser.error("--accounts must not exceed --sessions (each account needs a session)")
    return args


def seed(dovecot: Dovecot, accounts: int, inbox: int) -> list[tuple[str, str]]:
    """``load00``… with the same mail each (generated once): INBOX plus OTHER_FOLDERS."""
    mail = {"INBOX": make_messages(inbox, seed=inbox)}
    mail |= {folder: make_messages(n, seed=s) for folder, (n, s) in OTHER_FOLDERS.items()}
    users = []
    for i in range(accounts):
        user, password = f"load{i:02d}", f"load{i:02d}-pw"
        dovecot.add_user(user, password)
        for folder, messages in mail.items():
            seed_messages(dovecot.mail_root(user), folder, messages)
        open_mailboxes(dovecot, user, list(mail))
        users.append((user, password))
    return users


def specs(args: argparse.Namespace, users: list[tuple[str, str]]) -> list[SessionSpec]:
    """Session i goes to account i mod accounts; each owns a disjoint share of its INBOX."""
    ramp = min(10.0, args.duration * RAMP_SHARE)
    out = []
    for i in range(args.sessions):
        account = i % args.accounts
        slots = len(range(account, args.sessions, args.accounts))
        user, password = users[account]
        delay = ramp * i / args.sessions
        out.append(SessionSpec(i, user, password, i // args.accounts, slots, delay))
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat.

    The machine's share busy over the run says whether the figures are CPU-bound: the
    proxy, the clients and Dovecot share its cores (and so may other jobs)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Sampler:
    """The proxy's RSS once a second (VmHWM gives the peak; this gives the shape)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.samples.append((time.monotonic() - self._started, procstats.rss_kib(self.pid)))
            except (OSError, KeyError):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_clients(
    args: argparse.Namespace, proxy: ProxyProcess, all_specs: list[SessionSpec]
) -> tuple[list[dict[str, Any]], float]:
    """Start the worker processes, wait for their reports; (reports, seconds of load)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0  # time for the spawned workers to import
    workers = []
    for w in range(args.workers):
        share = all_specs[w :: args.workers]
        process = context.Process(
            target=worker_main,
            args=(share, proxy.host, proxy.port, start_at, args.duration, args.think, results),
            daemon=True,
        )
        process.start()
        workers.append(process)
    reports = []
    deadline = start_at + args.duration + 300
    while len(reports) < len(workers) and time.time() < deadline:
        try:
            reports.append(results.get(timeout=5))
        except Exception:
            if not any(p.is_alive() for p in workers) and results.empty():
                break
    for process in workers:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    return reports, time.time() - start_at


def wait_for_outbox(state_dir: Path) -> tuple[float, int, int]:
    """(seconds waited, changes still queued, changes refused), as ``imapproxy status`` sees it."""
    started = time.monotonic()
    while True:
        accounts = status_report.collect(state_dir)
        queued = sum(int(a["queued_changes"]) for a in accounts)
        refused = sum(int(a["refused_changes"]) for a in accounts)
        if queued == 0 or time.monotonic() - started > DRAIN_TIMEOUT:
            return time.monotonic() - started, queued, refused
        time.sleep(0.2)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the value below which ``share`` of the samples fall."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def command_rows(reports: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    latencies: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    for report in reports:
        for session in report["sessions"]:
            for name, values in session["latencies"].items():
                latencies.setdefault(name, []).extend(values)
            errors.update(session["errors"])
    rows = []
    for name in sorted(set(latencies) | set(errors), key=lambda n: -len(latencies.get(n, []))):
        values = latencies.get(name, [])
        rows.append(
            {
                "command": name,
                "count": len(values),
                "per_s": len(values) / seconds,
                "p50_ms": percentile(values, 0.50) * 1000 if values else None,
                "p95_ms": percentile(values, 0.95) * 1000 if values else None,
                "p99_ms": percentile(values, 0.99) * 1000 if values else None,
                "max_ms": max(values) * 1000 if values else None,
                "errors": errors[name],
            }
        )
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(document: dict[str, Any]) -> str:
    config, proxy, rows = document["config"], document["proxy"], document["commands"]
    total = sum(r["count"] for r in rows)
    lines = [
        f"Load: {config['sessions']} sessions over {config['accounts']} accounts, "
        f"{document['load_seconds']:.0f} s, rtt {config['rtt']:g} ms, INBOX {config['inbox']} "
        f"messages, {config['workers']} client processes, think {config['think']:g} s",
        "",
        table(
            ["command", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"],
            [
                [
                    r["command"],
                    str(r["count"]),
                    f"{r['per_s']:.1f}",
                    _ms(r["p50_ms"]),
                    _ms(r["p95_ms"]),
                    _ms(r["p99_ms"]),
                    _ms(r["max_ms"]),
                    str(r["errors"]),
                ]
                for r in rows
            ],
        ),
        "",
        f"throughput: {total} commands, {total / document['load_seconds']:.1f} commands/s; "
        f"{document['rounds']} workload rounds, {document['reconnects']} reconnects",
        f"reads refused NO [EXPUNGEISSUED] (or [UNAVAILABLE]) because another session had just moved or expunged "
        f"a message asked for (not counted as errors): {document['raced']}"
        + (f", e.g. {document['raced_samples'][0]}" if document["raced_samples"] else ""),
        f"proxy: CPU {proxy['cpu_s']:.1f} s ({proxy['cpu_share']:.0%} of one core), "
        f"RSS idle {human_bytes(proxy['idle_rss_kib'] * 1024)}, peak "
        f"{human_bytes(proxy['peak_rss_kib'] * 1024)}, at end "
        f"{human_bytes(proxy['end_rss_kib'] * 1024)}, state dir "
        f"{human_bytes(proxy['state_dir_bytes'])}",
        "clients: "
        + ", ".join(
            f"worker {i} {w['cpu_share']:.0%} of a core" for i, w in enumerate(document["workers"])
        )
        + f"; whole machine {document['machine_busy']:.0%} busy ({os.cpu_count()} cores), "
        f"load average at end {document['loadavg']}",
        f"outbox: drained in {document['drain_s']:.1f} s after the sessions ended, "
        f"{document['queued_left']} left, {document['refused']} refused",
        "checked on Dovecot: "
        + ", ".join(f"{n} {k}" for k, n in document["checked"].items())
        + f" ({document['uncertain']} left out after a failed command)",
    ]
    if document["problems"]:
        lines.append(f"FAILED ({len(document['problems'])} problems):")
        lines += [f"  {p}" for p in document["problems"][:40]]
    else:
        lines.append("OK: nothing lost, nothing duplicated, no command failed")
    lines += [f"  note: {n}" for n in document["notes"][:20]]
    return "\n".join(lines)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    problems: list[str] = []
    notes: list[str] = []
    with LoadDovecot(directory=workdir / "dovecot") as dovecot:
        log(f"seeding {args.accounts} accounts of {args.inbox} INBOX messages")
        users = seed(dovecot, args.accounts, args.inbox)
        link = (
            LinkProcess(dovecot.host, dovecot.port, Profile(args.rtt / 1000)) if args.rtt else None
        )
        if link is not None:
            link.__enter__()
        proxy: ProxyProcess | None = None
        try:
            host, port = (link.host, link.port) if link else (dovecot.host, dovecot.port)
            proxy = ProxyProcess(f"imap+plain://{host}:{port}", workdir / "state").start()
            pid = proxy.pid
            assert pid is not None
            idle_rss, cpu_start = procstats.rss_kib(pid), procstats.cpu_seconds(pid)
            all_specs = specs(args, users)
            log(f"{args.sessions} sessions for {args.duration:g} s in {args.workers} processes")
            busy_before = machine_ticks()
            with Sampler(pid) as sampler:
                reports, load_seconds = run_clients(args, proxy, all_specs)
            busy_after = machine_ticks()
            cpu_s = procstats.cpu_seconds(pid) - cpu_start
            peak, end_rss = procstats.peak_rss_kib(pid), procstats.rss_kib(pid)
            log("sessions done; waiting for the outbox to drain")
            drain_s, queued_left, refused = wait_for_outbox(proxy.state_dir)
            state_bytes = procstats.disk_usage_bytes(proxy.state_dir)
            code = proxy.stop()
            if code != 0:
                problems.append(f"proxy exited with {code}: {proxy.log_tail(20)}")
            for line in proxy.log_text().splitlines():
                if any(marker in line for marker in LOG_ALARMS) and len(notes) < 50:
                    notes.append(f"proxy log: {line.strip()[:300]}")
        finally:
            if proxy is not None and proxy.running:  # a crash above: never leave it running
                proxy.stop()
            if link is not None:
                link.__exit__(None, None, None)
        if len(reports) < args.workers:
            problems.append(f"only {len(reports)} of {args.workers} client workers reported")
        if queued_left:
            problems.append(
                f"{queued_left} changes still queued {DRAIN_TIMEOUT:.0f} s after the end"
            )
        if refused:
            problems.append(f"{refused} changes refused by the upstream")
        log("checking Dovecot's state against what the sessions did")
        by_user: dict[str, list[dict[str, Any]]] = {}
        for report in reports:
            if report.get("hung"):
                problems.append(f"{report['hung']} session(s) still running after the deadline")
            problems += [f"worker crash: {c}" for c in report.get("crashes", [])]
            for session in report["sessions"]:
                by_user.setdefault(session["user"], []).append(session["expect"])
                problems += [f"error: {e}" for e in session["error_samples"]]
        checked: Counter[str] = Counter()
        for user, password in users:
            wrong, counted = check_account(
                dovecot.host, dovecot.port, user, password, by_user.get(user, [])
            )
            problems += wrong
            checked.update(counted)
    rows = command_rows(reports, load_seconds)
    if any(r["errors"] for r in rows) and not any(p.startswith("error") for p in problems):
        problems.append("commands failed (see the errors column)")
    sessions = [s for r in reports for s in r["sessions"]]
    return {
        "machine": machine_facts(),
        "command": " ".join(["python -m bench.load", *args.argv]),
        "config": {
            k: getattr(args, k)
            for k in ("sessions", "accounts", "duration", "rtt", "inbox", "workers", "think")
        },
        "environment": {k: v for k, v in os.environ.items() if k.startswith("IMAPPROXY_")},
        "load_seconds": load_seconds,
        "commands": rows,
        "rounds": sum(s["rounds"] for s in sessions),
        "reconnects": sum(s["reconnects"] for s in sessions),
        "raced": sum(s["raced"] for s in sessions),
        "raced_samples": [x for s in sessions for x in s["raced_samples"]][:10],
        "proxy": {
            "cpu_s": cpu_s,
            "cpu_share": cpu_s / load_seconds,
            "idle_rss_kib": idle_rss,
            "peak_rss_kib": peak,
            "end_rss_kib": end_rss,
            "rss_samples": sampler.samples,
            "state_dir_bytes": state_bytes,
        },
        "workers": [
            {"cpu_s": r["cpu_s"], "wall_s": r["wall_s"], "cpu_share": r["cpu_s"] / r["wall_s"]}
            for r in reports
        ],
        "machine_busy": (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "drain_s": drain_s,
        "queued_left": queued_left,
        "refused": refused,
        "checked": dict(checked),
        "uncertain": sum(s["expect"]["uncertain"] for s in sessions),
        "problems": problems,
        "notes": notes,
        "correct": not problems,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="imapproxy-load-"))
    workdir.chmod(0o755)  # Dovecot's mail user must traverse it
    try:
        document = measure(args, workdir)
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(document))
    write_json(args.out, document)
    log(f"wrote {args.out}")
    return 0 if document["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
