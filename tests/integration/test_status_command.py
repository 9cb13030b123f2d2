"""`imapproxy status`: per account, the link state and since when, queued and refused
changes, last sync, cache size and bytes served vs. fetched, read from the state dir."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.clients import imap
from tests.integration.test_offline_reads import SYNCED
from tests.support.corpus import Account
from tests.support.proxy import ProxyProcess

RUN_TIMEOUT = 20


def _status(state_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imapproxy", "status", "--state-dir", str(state_dir), *extra],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def _accounts(state_dir: Path) -> dict[str, dict[str, Any]]:
    result = _status(state_dir, "--json")
    assert result.returncode == 0, result.stderr
    return {a["user"]: a for a in json.loads(result.stdout)["accounts"]}


def _until(state_dir: Path, user: str, check: Any, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        account = _accounts(state_dir).get(user)
        if account is not None and check(account):
            return account
        assert time.monotonic() < deadline, account
        time.sleep(0.2)


def test_status_shows_link_sync_cache_and_traffic(make_proxy, fresh_user: Account) -> None:
    proxy: ProxyProcess = make_proxy()
    state = proxy.state_dir
    with imap(proxy.host, proxy.port, fresh_user) as client:
        proxy.wait_for_log(SYNCED)
        client.select_folder("INBOX", readonly=True)
        client.use_uid = False
        bodies = client.fetch([1, 2, 3], ["BODY.PEEK[]"])
        client.fetch([1, 2, 3], ["BODY.PEEK[]"])  # the second time from the cache
        body_bytes = sum(len(m[b"BODY[]"]) for m in bodies.values())

        # The second read came from the cache (the first too when the background prefetch
        # was quicker than the client); the status record is written every few seconds.
        online = _until(
            state, fresh_user.user, lambda a: a["served_from_cache_bytes"] >= body_bytes
        )
        assert online["proxy_running"] and online["online"] is True
        assert online["pid"] == proxy.pid
        assert online["last_sync"] is not None and online["since"] is not None
        assert online["queued_changes"] == 0 and online["refused_changes"] == 0
        assert online["fetched_bytes"] >= body_bytes
        assert online["cache_bytes"] >= body_bytes

        text = _status(state)
        assert text.returncode == 0, text.stderr
        assert fresh_user.user in text.stdout
        assert "upstream link:    online since" in text.stdout
        for label in ("queued changes:   0", "refused changes:  0", "cache size:", "last sync:"):
            assert label in text.stdout, text.stdout
        assert "served from cache:" in text.stdout and "fetched from upstream:" in text.stdout

        assert proxy.relay is not None
        proxy.relay.cut()
        # The next look at the upstream finds it gone.
        client.noop()
        offline = _until(state, fresh_user.user, lambda a: a["online"] is False)
        assert offline["reason"]
        assert "upstream link:    offline since" in _status(state).stdout

    proxy.stop()
    stopped = _accounts(state)[fresh_user.user]
    assert not stopped["proxy_running"] and stopped["online"] is None
    assert stopped["served_from_cache_bytes"] >= 2 * body_bytes
    assert "the proxy is not running" in _status(state).stdout

    # Restarted, with nobody logged in yet: running, but this account's link not open.
    proxy.start()
    restarted = _accounts(state)[fresh_user.user]
    assert restarted["proxy_running"] and restarted["pid"] == proxy.pid
    assert restarted["online"] is None and not restarted["logged_in_since_start"]
    assert "nobody has logged in since the proxy started" in _status(state).stdout


def test_status_of_a_directory_without_replica_is_a_one_line_error(tmp_path: Path) -> None:
    result = _status(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("imapproxy: error: no replica in"), result.stderr
    assert "Traceback" not in result.stderr
