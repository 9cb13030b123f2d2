"""``--metrics HOST:PORT``: a scraper sees the proxy's numbers move — a login opens a
session and an account, a cut link makes the account offline, a change made offline is
queued in the outbox, reads count bytes and cache hits, and a restored link drains it."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.net import free_port
from tests.support.proxy import ProxyProcess

WAIT = 30.0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = re.fullmatch(r"(imapproxy_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        assert match, f"not Prometheus text: {line!r}"
        values[match.group(1)] = float(match.group(2))
    return values


def until(
    port: int, check: Callable[[dict[str, float]], bool], poke: Callable[[], object]
) -> dict[str, float]:
    deadline = time.monotonic() + WAIT
    while True:
        values = scrape(port)
        if check(values):
            return values
        assert time.monotonic() < deadline, f"metrics never got there: {values}"
        poke()
        time.sleep(0.2)


def test_metrics_move_with_logins_cuts_and_queued_changes(make_proxy, fresh_user: Account) -> None:
    port = free_port()
    proxy: ProxyProcess = make_proxy(
        extra_args=["--metrics", f"127.0.0.1:{port}", "--write-wait", "0.5"]
    )
    assert proxy.relay is not None
    before = scrape(port)
    assert before["imapproxy_sessions"] == 0
    assert before['imapproxy_accounts{state="online"}'] == 0
    assert before["imapproxy_outbox_queued"] == 0

    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        client.fetch(uids[:3], ["BODY.PEEK[]"])
        online = until(port, lambda v: v['imapproxy_accounts{state="online"}'] == 1, client.noop)
        assert online["imapproxy_sessions"] == 1
        assert online["imapproxy_upstream_connections"] >= 1
        assert (
            online["imapproxy_upstream_received_bytes_total"]
            > before["imapproxy_upstream_received_bytes_total"]
        )
        assert (
            online["imapproxy_client_sent_bytes_total"]
            > before["imapproxy_client_sent_bytes_total"]
        )
        assert online["imapproxy_cache_misses_total"] >= before["imapproxy_cache_misses_total"] + 3
        assert online["imapproxy_sync_seconds_count"] > before["imapproxy_sync_seconds_count"]
        client.fetch(uids[:3], ["BODY.PEEK[]"])  # from the cache this time
        assert (
            scrape(port)["imapproxy_cache_hits_total"] >= online["imapproxy_cache_hits_total"] + 3
        )

        proxy.relay.cut()
        offline = until(port, lambda v: v['imapproxy_accounts{state="offline"}'] == 1, client.noop)
        assert offline['imapproxy_accounts{state="online"}'] == 0
        assert offline["imapproxy_upstream_connections"] == 0
        client.add_flags(uids[:1], [b"$MetricsTest"])
        assert scrape(port)["imapproxy_outbox_queued"] == 1, proxy.log_tail()

        replays = offline["imapproxy_replay_seconds_count"]
        proxy.relay.resume()
        drained = until(port, lambda v: v["imapproxy_outbox_queued"] == 0, client.noop)
        assert drained["imapproxy_replay_seconds_count"] >= replays + 1
        assert drained["imapproxy_outbox_refused"] == 0
    until(port, lambda v: v["imapproxy_sessions"] == 0, lambda: None)


def test_metrics_only_serves_metrics(make_proxy) -> None:
    port = free_port()
    make_proxy(extra_args=["--metrics", f"127.0.0.1:{port}"])
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert error.value.code == 404
