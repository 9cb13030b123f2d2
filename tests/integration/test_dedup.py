"""A message is downloaded once however many folders hold it (issue 6).

COPY and MOVE through the proxy reuse the cached body; a message another client moved
(gone from one folder, the same bytes in another) is recognised by its RFC822.SIZE and
its byte-identical header block and served from the body already cached; two messages
of equal size whose headers differ are never taken for one another. Upstream bytes are
counted by the relay between the proxy and Dovecot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from imapclient import IMAPClient

from tests.integration.clients import caught_up, imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

#: Old enough that the default prefetch (last 90 days) never fetches these bodies on
#: its own: every body download in these tests is one a client asked for.
OLD = datetime(2020, 3, 1, 12, 0, tzinfo=UTC)
BODY_SIZE = 200_000


def _message(subject: str, message_id: str, fill: bytes, size: int = BODY_SIZE) -> bytes:
    header = (
        f"From: Sender <s@example.org>\r\nTo: r@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nDate: Sun, 01 Mar 2020 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = fill * 76 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return header + body


@pytest.fixture
def user(dovecot: Dovecot) -> Iterator[Account]:
    """An account with only what a test puts in it (INBOX, and Archive from Dovecot)."""
    name = f"dedup-{uuid.uuid4().hex[:10]}"
    dovecot.add_user(name, f"{name}-pw")
    yield Account(name, f"{name}-pw", {})


def _direct(dovecot: Dovecot, account: Account) -> IMAPClient:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=30)
    client.login(account.user, account.password)
    return client


def _append(dovecot: Dovecot, account: Account, *raws: bytes) -> None:
    client = _direct(dovecot, account)
    try:
        for folder in ("Archive", "Trash"):
            if not client.folder_exists(folder):
                client.create_folder(folder)
        for raw in raws:
            client.append("INBOX", raw, msg_time=OLD)
    finally:
        client.logout()


def _read_all(client: IMAPClient, folder: str) -> dict[int, bytes]:
    """BODY[] of every message in folder, through imapclient (UIDs as keys)."""
    client.select_folder(folder)
    uids = client.search(["ALL"])
    fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return {uid: item[b"BODY[]"] for uid, item in fetched.items()}


def test_copy_and_move_through_the_proxy_download_nothing_again(
    make_proxy, dovecot: Dovecot, user: Account
) -> None:
    raw = _message("copied", f"{uuid.uuid4().hex}@example.org", b"c")
    _append(dovecot, user, raw)
    proxy: ProxyProcess = make_proxy()
    relay = proxy.relay
    with imap(proxy.host, proxy.port, user) as client:
        assert list(_read_all(client, "INBOX").values()) == [raw]
        relay.reset_counters()
        client.select_folder("INBOX")
        (uid,) = client.search(["ALL"])
        client.copy([uid], "Archive")
        client.move([uid], "Trash")
        assert list(_read_all(client, "Archive").values()) == [raw]
        assert list(_read_all(client, "Trash").values()) == [raw]
        assert _read_all(client, "INBOX") == {}
    # The COPY, MOVE, SELECTs and the new messages' metadata: no body twice.
    assert relay.bytes_down < BODY_SIZE / 10, relay.bytes_down


def test_message_moved_by_another_client_is_not_downloaded_again(
    make_proxy, dovecot: Dovecot, user: Account
) -> None:
    raw = _message("moved elsewhere", f"{uuid.uuid4().hex}@example.org", b"m")
    _append(dovecot, user, raw)
    proxy: ProxyProcess = make_proxy()
    relay = proxy.relay
    with imap(proxy.host, proxy.port, user) as client:
        assert list(_read_all(client, "INBOX").values()) == [raw]
        relay.reset_counters()
        direct = _direct(dovecot, user)
        try:
            direct.select_folder("INBOX")
            direct.move(direct.search(["ALL"]), "Archive")
        finally:
            direct.logout()
        client.noop()  # the proxy hears of the expunge in INBOX (and drops that copy)
        assert _read_all(client, "INBOX") == {}
        assert list(_read_all(client, "Archive").values()) == [raw]
        moved = relay.bytes_down
        print(f"move by another client, then read: {moved} bytes from upstream")
        assert moved < BODY_SIZE / 10, moved

        # A copy by another client: the message stays where it was read, and its copy
        # takes the same body.
        direct = _direct(dovecot, user)
        try:
            direct.select_folder("Archive")
            direct.copy(direct.search(["ALL"]), "Trash")
        finally:
            direct.logout()
        caught_up((dovecot.host, dovecot.port), (proxy.host, proxy.port), user, "Trash")
        assert list(_read_all(client, "Trash").values()) == [raw]
        assert list(_read_all(client, "Archive").values()) == [raw]
    assert relay.bytes_down - moved < BODY_SIZE / 10, relay.bytes_down - moved


def test_a_message_delivered_to_two_folders_is_downloaded_once(
    make_proxy, dovecot: Dovecot, user: Account
) -> None:
    """Both copies' headers are known (the background sync fetched every folder's
    metadata) before either body is read: reading the second costs no download."""
    raw = _message("filed twice", f"{uuid.uuid4().hex}@example.org", b"t")
    _append(dovecot, user, raw)
    direct = _direct(dovecot, user)
    try:
        direct.append("Archive", raw, msg_time=OLD)
    finally:
        direct.logout()
    proxy: ProxyProcess = make_proxy()
    relay = proxy.relay
    with imap(proxy.host, proxy.port, user) as client:
        client.select_folder("INBOX")
        proxy.wait_for_log("background sync complete")
        assert list(_read_all(client, "INBOX").values()) == [raw]
        relay.reset_counters()
        assert list(_read_all(client, "Archive").values()) == [raw]
    assert relay.bytes_down < BODY_SIZE / 10, relay.bytes_down


def test_equal_size_different_header_is_downloaded(
    make_proxy, dovecot: Dovecot, user: Account
) -> None:
    first = _message("one", "same-size-1@example.org", b"a")
    second = _message("two", "same-size-2@example.org", b"b")
    assert len(first) == len(second)
    _append(dovecot, user, first, second)
    proxy: ProxyProcess = make_proxy()
    relay = proxy.relay
    with imap(proxy.host, proxy.port, user) as client:
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        got = client.fetch(uids[:1], ["BODY.PEEK[]"])
        assert got[uids[0]][b"BODY[]"] == first
        relay.reset_counters()
        got = client.fetch(uids[1:], ["BODY.PEEK[]"])
        assert got[uids[1]][b"BODY[]"] == second
    assert relay.bytes_down > BODY_SIZE, relay.bytes_down
