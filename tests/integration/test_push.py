"""Upstream news of every mailbox a client has selected reaches clients idling on the
proxy at once, not only news of the one mailbox the link IDLEs on (issue 6).

Two clients select different folders and IDLE; a message APPENDed straight to Dovecot
in either folder must reach the client on that folder within seconds: through NOTIFY
(RFC 5465) on the account's watcher connection, and, against a Dovecot that does not
announce NOTIFY, through the watcher's STATUS poll.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from imapclient import IMAPClient

from tests.integration.clients import imap
from tests.support.corpus import Account, seed_standard_account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

FOLDERS = ("Archive/2024", "Sent")
#: With NOTIFY: Dovecot's notify delay (~0.5 s) + coalescing + one resync; margin for
#: a shared machine.
NOTIFY_BOUND = 3.0
#: Without NOTIFY: the watcher's STATUS poll (2 s) + a round trip + one resync.
POLL_BOUND = 5.0


def _message(tag: str) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: push {tag}\r\n"
        f"Message-ID: <{tag}@push.example>\r\n\r\nhello\r\n"
    ).encode()


def _idling(proxy: ProxyProcess, account: Account, folder: str) -> IMAPClient:
    client = IMAPClient(proxy.host, port=proxy.port, ssl=False, timeout=30)
    client.login(account.user, account.password)
    client.select_folder(folder)
    client.idle()
    return client


def _wait_exists(client: IMAPClient, deadline: float) -> float | None:
    while (left := deadline - time.monotonic()) > 0:
        for response in client.idle_check(timeout=min(left, 0.5)):
            if len(response) >= 2 and response[1] == b"EXISTS":
                return time.monotonic()
    return None


def _push_latencies(dovecot: Dovecot, proxy: ProxyProcess, account: Account) -> dict[str, float]:
    """Seconds from an APPEND on Dovecot to EXISTS at the client idling on that folder,
    for each folder (30 s cap: a figure that large fails the test with its value)."""
    clients = {folder: _idling(proxy, account, folder) for folder in FOLDERS}
    # The first background pass (which would notice the change on its own) is done, and
    # the link IDLEs on one of the two folders: the other is watched only by the watcher.
    proxy.wait_for_log("background sync complete")
    time.sleep(1.0)
    out: dict[str, float] = {}
    try:
        with imap(dovecot.host, dovecot.port, account) as appender:
            for folder, client in clients.items():
                client.idle_check(timeout=0)
                with ThreadPoolExecutor(1) as pool:
                    start = time.monotonic()
                    seen = pool.submit(_wait_exists, client, start + 30)
                    appender.append(folder, _message(uuid.uuid4().hex))
                    at = seen.result()
                out[folder] = 30.0 if at is None else at - start
    finally:
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.idle_done()
                client.logout()
    return out


def test_news_of_every_selected_folder_reaches_idling_clients_within_a_second(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    latencies = _push_latencies(dovecot, proxy, fresh_user)
    assert all(s < NOTIFY_BOUND for s in latencies.values()), latencies
    assert "upstream watcher: NOTIFY" in proxy.log_text()


def test_without_notify_the_watcher_polls_status_and_still_pushes(
    dovecot_without_notify: Dovecot, tmp_path: Path
) -> None:
    dovecot = dovecot_without_notify
    user = f"user-{uuid.uuid4().hex[:10]}"
    dovecot.add_user(user, f"{user}-pw")
    account = Account(user, f"{user}-pw", seed_standard_account(dovecot, user))
    with imap(dovecot.host, dovecot.port, account) as direct:
        assert b"NOTIFY" not in direct.capabilities()
    proxy = ProxyProcess(f"imap+plain://{dovecot.host}:{dovecot.port}", tmp_path / "state")
    with proxy:
        latencies = _push_latencies(dovecot, proxy, account)
        assert "upstream watcher: STATUS poll" in proxy.log_text()
    assert all(s < POLL_BOUND for s in latencies.values()), latencies
