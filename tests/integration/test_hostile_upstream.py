"""A hostile or broken upstream, through the real ``imapproxy serve``: it costs at most
that upstream connection. The client keeps getting answers (from the replica, or
NO [UNAVAILABLE]), the replica stays intact, the proxy's memory stays bounded while
the upstream floods it, and the proxy reconnects with backoff and recovers once the
upstream behaves again."""

from __future__ import annotations

import imaplib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.fake_upstream import MODES, FakeUpstream
from tests.support.proxy import ProxyProcess

MiB = 1 << 20
#: What the proxy's resident memory may grow by while the upstream floods it: the
#: reader's caps (a 64 MiB line, a literal refused when announced) and their copies.
RSS_GROWTH_LIMIT = 200 * MiB
#: Garbage is noticed at once and a silent command within the stall limit (8 s); a
#: drip holds the link until its throughput window (10 s) runs out.
ANSWER_WITHIN = {"drip": 15.0}
DEFAULT_ANSWER_WITHIN = 10.0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def _peak_rss(pid: int) -> Iterator[list[int]]:
    """Samples the process's RSS every 50 ms; the list holds the peak afterwards."""
    peak = [_rss(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _rss(pid))
            except (OSError, AssertionError):
                return
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(2)


def _timed(mode: str, call: object) -> tuple[str, list]:
    start = time.monotonic()
    typ, data = call()  # type: ignore[operator]
    elapsed = time.monotonic() - start
    limit = ANSWER_WITHIN.get(mode, DEFAULT_ANSWER_WITHIN)
    assert elapsed < limit, f"{mode}: a command took {elapsed:.1f} s"
    return typ, data


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    try:
        yield fake
    finally:
        fake.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [m for m in MODES if m != "ok"])
def test_a_hostile_upstream_costs_only_its_connection(
    mode: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    proxy = ProxyProcess(upstream.url, tmp_path / "state").start()
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=60)
    try:
        assert client.login("user", "secret")[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        typ, cached = client.fetch("1:3", "(BODY.PEEK[])")
        assert typ == "OK"
        time.sleep(1.0)  # the link IDLEs upstream now
        assert proxy.pid is not None
        baseline = _rss(proxy.pid)
        logins = upstream.logins

        upstream.mode = mode
        with _peak_rss(proxy.pid) as peak:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                typ, _ = _timed(mode, client.noop)
                assert typ == "OK"
                typ, again = _timed(mode, lambda: client.fetch("1:3", "(BODY.PEEK[])"))
                assert typ == "OK" and again == cached
                typ, data = _timed(mode, lambda: client.fetch("4", "(BODY.PEEK[])"))
                assert typ == "NO" and data[0].startswith(b"[UNAVAILABLE]"), (typ, data)
                time.sleep(0.5)
        assert proxy.running, proxy.log_tail()
        growth = peak[0] - baseline
        assert growth < RSS_GROWTH_LIMIT, f"{mode}: RSS grew by {growth / MiB:.0f} MiB"
        reconnects = upstream.logins - logins
        # It kept trying, with backoff: not once per client command.
        assert 1 <= reconnects <= 12, reconnects

        upstream.mode = "ok"
        deadline = time.monotonic() + 45
        while True:
            typ, data = client.fetch("4", "(BODY.PEEK[])")
            if typ == "OK" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert typ == "OK", (typ, data, proxy.log_tail())
        assert b"body of message 4" in data[0][1]
        typ, again = client.fetch("1:3", "(BODY.PEEK[])")
        assert typ == "OK" and again == cached
    finally:
        client.logout()
        proxy.stop()
    log = proxy.log_text()
    assert "Traceback" not in log and "Unhandled error" not in log, log[-3000:]
    print(
        f"{mode}: RSS baseline {baseline / MiB:.0f} MiB, peak growth {growth / MiB:.1f} MiB,"
        f" flooded {upstream.flooded / MiB:.0f} MiB, reconnects {reconnects}"
    )
