"""A cached LIST, STATUS or SELECT costs no upstream round trip while NOTIFY keeps the
replica current, and a change made elsewhere (new mail, a flag, a new folder) still
shows within the notification bound (issue 6).

Without NOTIFY nothing says the replica is current, so every LIST, STATUS and SELECT
asks the upstream and a change made elsewhere shows at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.integration.clients import imap
from tests.integration.conftest import ProxyFactory
from tests.support.corpus import Account, seed_standard_account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import Relay

#: Dovecot's notify delay (~0.5 s) + coalescing + one resync; margin for a shared machine.
NOTIFY_BOUND = 3.0


def _message(tag: str) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: fresh {tag}\r\n"
        f"Message-ID: <{tag}@fresh.example>\r\n\r\nhello\r\n"
    ).encode()


def _folders(client: IMAPClient) -> list[str]:
    return [name for flags, _, name in client.list_folders() if b"\\Noselect" not in flags]


def _status_all(client: IMAPClient, folders: list[str]) -> dict[str, dict[bytes, int]]:
    return {f: client.folder_status(f, ["MESSAGES", "UIDNEXT", "UNSEEN"]) for f in folders}


def _until(check: Callable[[], bool], seconds: float, step: float = 0.1) -> float | None:
    """Seconds until check() held, or None if it did not within seconds."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(step)
    return None


def test_cached_status_needs_no_round_trip_and_news_still_shows(
    dovecot: Dovecot, make_proxy: ProxyFactory, fresh_user: Account
) -> None:
    proxy = make_proxy()
    relay = proxy.relay
    assert relay is not None
    with imap(proxy.host, proxy.port, fresh_user) as client:
        folders = _folders(client)
        before = _status_all(client, folders)
        proxy.wait_for_log("upstream watcher: NOTIFY")

        def quiet() -> bool:
            relay.reset_counters()
            _folders(client)
            _status_all(client, folders)
            client.select_folder("INBOX", readonly=True)
            client.unselect_folder()
            return relay.bytes_up == 0

        # Once NOTIFY covers every folder and the list, and each was synced after,
        # nothing goes up.
        assert _until(quiet, 10.0, step=0.3) is not None, proxy.log_tail()
        assert _status_all(client, folders) == before
        assert _folders(client) == folders

        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.append("Sent", _message(uuid.uuid4().hex))
            direct.select_folder("INBOX")
            first_uid = direct.search(["ALL"])[0]
            direct.add_flags([first_uid], [b"$Fresh"])

        def sent_grew() -> bool:
            status = client.folder_status("Sent", ["MESSAGES"])
            return status[b"MESSAGES"] == before["Sent"][b"MESSAGES"] + 1

        assert _until(sent_grew, NOTIFY_BOUND) is not None

        def flag_shows() -> bool:
            client.select_folder("INBOX", readonly=True)
            found = client.search(["KEYWORD", "$Fresh"])
            client.unselect_folder()
            return len(found) == 1

        assert _until(flag_shows, NOTIFY_BOUND) is not None

        new_folder = f"Fresh{uuid.uuid4().hex[:8]}"
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.create_folder(new_folder)
        assert _until(lambda: new_folder in _folders(client), NOTIFY_BOUND) is not None
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.delete_folder(new_folder)
        assert _until(lambda: new_folder not in _folders(client), NOTIFY_BOUND) is not None


def test_with_notify_the_watcher_connects_at_login_before_anything_is_listed(
    make_proxy: ProxyFactory, fresh_user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until NOTIFY covers a folder, its STATUS asks the upstream. The watcher connects
    once the login is through (watcher.prepare), so its NOTIFY SET follows the folder
    list by one round trip instead of a new connection's three. (With the background
    sync off, nothing else lists the folders before the client does.)"""
    monkeypatch.setenv("IMAPPROXY_SYNC_INTERVAL", "0")
    proxy = make_proxy()
    relay = proxy.relay
    assert relay is not None
    with imap(proxy.host, proxy.port, fresh_user) as client:
        # Nothing listed or selected yet: the link, and the watcher made ahead.
        assert _until(lambda: relay.active_connections == 2, 10.0) is not None
        # Connected is not yet logged in: the line comes once its LOGIN is answered.
        proxy.wait_for_log("upstream watcher: NOTIFY", seconds=10)
        _folders(client)  # the watcher now covers every folder: on the same connection
        assert _until(lambda: relay.active_connections != 2, 1.0) is None


def test_without_notify_every_status_asks_the_upstream(
    dovecot_without_notify: Dovecot, tmp_path: Path
) -> None:
    dovecot = dovecot_without_notify
    user = f"user-{uuid.uuid4().hex[:10]}"
    dovecot.add_user(user, f"{user}-pw")
    account = Account(user, f"{user}-pw", seed_standard_account(dovecot, user))
    with (
        Relay(dovecot.host, dovecot.port) as relay,
        ProxyProcess(f"imap+plain://{dovecot.host}:{relay.port}", tmp_path / "state") as proxy,
        imap(proxy.host, proxy.port, account) as client,
    ):
        # No NOTIFY: nothing to connect a watcher for until a folder is selected (it
        # polls selected folders), not even once the background pass has listed them.
        proxy.wait_for_log("background sync complete", seconds=10)
        assert relay.connections_made == 1
        before = _status_all(client, ["Sent"])
        folders = _folders(client)
        for _ in range(3):
            relay.reset_counters()
            assert _status_all(client, ["Sent"]) == before
            assert relay.bytes_up > 0
            relay.reset_counters()
            assert _folders(client) == folders
            assert relay.bytes_up > 0
            relay.reset_counters()
            client.select_folder("Sent", readonly=True)
            client.unselect_folder()
            assert relay.bytes_up > 0
        with imap(dovecot.host, dovecot.port, account) as direct:
            direct.append("Sent", _message(uuid.uuid4().hex))
            direct.create_folder("Brand new")
        # Asked at once, so seen at once.
        status = client.folder_status("Sent", ["MESSAGES"])
        assert status[b"MESSAGES"] == before["Sent"][b"MESSAGES"] + 1
        assert "Brand new" in _folders(client)
