"""How fast the proxy serves a cached header FETCH, against Dovecot, to a fast client.

The `sessions` scenario's client is imapclient, whose pure-Python reading and parsing
of 10,000 entries takes longer than either server takes to send them, so its
`fetch_list` phase mostly times the client. Here the client only reads lines and counts
bytes: `UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)` of a
whole INBOX, straight from Dovecot (no link, no added latency) and from a proxy whose
replica holds it already, five times each, medians. The proxy's CPU per FETCH comes
from /proc. A SHA-256 prefix of the answer (tagged line excluded) lets two trees be
compared byte for byte.

    .venv/bin/python -m bench.serve_fetch 10000              # this tree
    .venv/bin/python -m bench.serve_fetch 10000 TREE TREE2   # proxies run from other trees

Each TREE is a checkout whose ``imapproxy`` the proxy runs (its working directory and
PYTHONPATH), so a branch can be measured against the commit before it in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from bench import procstats
from bench.accounts import seed_user
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

ITEMS = b"(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
ROUNDS = 5


class Reader:
    """One connection, logged in with INBOX selected; answers read as bytes, unparsed."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.command(b"a1", b"LOGIN %s %s" % (user.encode(), password.encode()))
        self.command(b"a2", b"SELECT INBOX")

    def command(self, tag: bytes, text: bytes) -> tuple[int, str]:
        """(bytes of the answer, SHA-256 prefix of its untagged part)."""
        self.sock.sendall(tag + b" " + text + b"\r\n")
        total, digest = 0, hashlib.sha256()
        while True:
            line = self.file.readline()
            total += len(line)
            if line.startswith(tag + b" "):
                if b" OK" not in line:
                    raise RuntimeError(line.decode(errors="replace"))
                return total, digest.hexdigest()[:16]
            digest.update(line)
            if line.endswith(b"}\r\n"):
                data = self.file.read(int(line[line.rindex(b"{") + 1 : -3]))
                total += len(data)
                digest.update(data)

    def fetches(self, rounds: int) -> tuple[list[float], tuple[int, str]]:
        times, answer = [], (0, "")
        for i in range(rounds):
            began = time.perf_counter()
            answer = self.command(b"f%d" % i, b"UID FETCH 1:* " + ITEMS)
            times.append(time.perf_counter() - began)
        return times, answer

    def close(self) -> None:
        self.command(b"z", b"LOGOUT")
        self.sock.close()


def fetch_times(
    port: int, user: str, password: str, rounds: int
) -> tuple[list[float], tuple[int, str]]:
    reader = Reader(port, user, password)
    try:
        return reader.fetches(rounds)
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", type=int)
    parser.add_argument("trees", nargs="*", type=Path)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees or [Path.cwd()]]
    os.environ.setdefault("IMAPPROXY_SYNC_INTERVAL", "0")
    with Dovecot() as dovecot:
        user = seed_user(dovecot, args.size, name=f"serve{args.size}")
        fetch_times(dovecot.port, user.name, user.password, 1)  # Dovecot's own cache
        for tree in trees:
            os.environ["PYTHONPATH"] = str(tree)
            os.chdir(tree)  # `python -m` puts the working directory first on the path
            state = Path(tempfile.mkdtemp(prefix="serve-fetch-")) / "state"
            upstream = f"imap+plain://127.0.0.1:{dovecot.port}"
            with ProxyProcess(upstream, state) as proxy:
                assert proxy.pid is not None
                idle = procstats.rss_kib(proxy.pid)
                cold, _ = fetch_times(proxy.port, user.name, user.password, 1)
                peak = procstats.peak_rss_kib(proxy.pid)
                direct, answer = fetch_times(dovecot.port, user.name, user.password, ROUNDS)
                cpu = procstats.cpu_seconds(proxy.pid)
                served, proxied = fetch_times(proxy.port, user.name, user.password, ROUNDS)
                cpu = (procstats.cpu_seconds(proxy.pid) - cpu) / ROUNDS
                direct += fetch_times(dovecot.port, user.name, user.password, ROUNDS)[0]
            d, s = statistics.median(direct), statistics.median(served)
            print(
                f"{tree}: N={args.size}: cached FETCH direct {d:.3f} s, proxy {s:.3f} s "
                f"({s / d:.2f}x), proxy CPU {cpu:.3f} s per FETCH; first FETCH through the "
                f"proxy {cold[0]:.2f} s, peak RSS {(peak - idle) / 1024:.0f} MiB above idle; "
                f"answer {answer[0]} B direct, {proxied[0]} B sha256 {proxied[1]} proxy",
                flush=True,
            )


if __name__ == "__main__":
    main()
