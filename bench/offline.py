"""Offline header sync of N messages vs. the same online: ``python -m bench.offline``.

A mail client's header sync (``UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE
ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (...)])``) over an INBOX of N
messages, timed three ways on one fresh account: straight against Dovecot, through
the proxy online (after its background sync has the metadata), and through the same
proxy with its upstream link cut. Also timed: the background metadata sync itself,
from the first login to ``background sync complete``. The offline answer must equal
the online one byte for byte, or the run exits 1 (that the proxy's answers equal
Dovecot's as values is bench/run.py's check).
"""

from __future__ import annotations

import argparse
import imaplib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.accounts import BenchUser, seed_user
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

HEADER_SYNC = (
    "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
    "BODY.PEEK[HEADER.FIELDS (DATE FROM TO CC SUBJECT MESSAGE-ID REFERENCES)])"
)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def header_sync(host: str, port: int, user: BenchUser) -> tuple[float, list[bytes]]:
    """Seconds for SELECT + the header FETCH, and the answers without their UIDs."""
    client = imaplib.IMAP4(host, port, timeout=300)
    try:
        client.login(user.name, user.password)
        began = time.perf_counter()
        typ, _ = client.select("INBOX", readonly=True)
        assert typ == "OK"
        typ, data = client.uid("FETCH", "1:*", HEADER_SYNC)
        elapsed = time.perf_counter() - began
        assert typ == "OK", data
    finally:
        client.logout()
    answers = []
    for item in data:
        if isinstance(item, tuple):
            head, literal = item
            answers.append(_without_uid(head) + literal)
    return elapsed, answers


def _without_uid(head: bytes) -> bytes:
    """The proxy numbers UIDs itself: compare the rest of each response."""
    return re.sub(rb"\bUID \d+ ?", b"", head)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.offline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", type=int, default=10000, help="INBOX size (default 10,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per path (median)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/offline.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="imapproxy-bench-offline-") as work:
        work_dir = Path(work)
        work_dir.chmod(0o755)
        with (
            Dovecot(work_dir / "dovecot", users={}) as dovecot,
            Relay(dovecot.host, dovecot.port) as relay,
        ):
            _log(f"seeding {args.size} messages")
            user = seed_user(dovecot, args.size)
            proxy = ProxyProcess(
                f"imap+plain://{relay.host}:{relay.port}", work_dir / "proxy-state"
            ).start()
            try:
                began = time.perf_counter()
                client = imaplib.IMAP4(proxy.host, proxy.port, timeout=300)
                client.login(user.name, user.password)
                proxy.wait_for_log("background sync complete", seconds=600)
                background_s = time.perf_counter() - began
                client.logout()
                _log(f"background metadata sync: {background_s:.1f} s, {relay.bytes_down} B down")
                background_down = relay.bytes_down

                timings: dict[str, list[float]] = {
                    "direct": [],
                    "proxy online": [],
                    "proxy offline": [],
                }
                answers: dict[str, list[bytes]] = {}
                for _ in range(args.repeat):
                    for label, (host, port) in (
                        ("direct", (dovecot.host, dovecot.port)),
                        ("proxy online", (proxy.host, proxy.port)),
                    ):
                        seconds, answers[label] = header_sync(host, port, user)
                        timings[label].append(seconds)
                relay.cut()
                for _ in range(args.repeat):
                    seconds, answers["proxy offline"] = header_sync(proxy.host, proxy.port, user)
                    timings["proxy offline"].append(seconds)
            finally:
                proxy.stop()

    medians = {k: sorted(v)[len(v) // 2] for k, v in timings.items()}
    responses = sum(1 for piece in answers["proxy offline"] if re.match(rb"\d+ \(", piece))
    equal = answers["proxy offline"] == answers["proxy online"] and responses == args.size
    print(
        f"Header sync of {args.size} messages (SELECT + UID FETCH 1:* {HEADER_SYNC}), median of {args.repeat}:"
    )
    print(f"{'path':>14}  {'seconds':>8}")
    for label, seconds in medians.items():
        print(f"{label:>14}  {seconds:8.3f}")
    print(
        f"background metadata sync before it: {background_s:.1f} s, {background_down / 2**20:.1f} MiB down"
    )
    print("offline answers equal online answers" if equal else "MISMATCH: offline answers differ")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "size": args.size,
                "median_s": medians,
                "samples_s": timings,
                "background_sync_s": background_s,
                "background_bytes_down": background_down,
                "offline_equals_online": equal,
            },
            indent=2,
        )
    )
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
