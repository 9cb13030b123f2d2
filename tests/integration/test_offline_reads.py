"""Reading offline: everything the replica holds is served as online, what it lacks is
refused with NO [UNAVAILABLE] and a reason, never answered as empty or zero."""

from __future__ import annotations

import email
import email.policy
import json
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from imapclient import IMAPClient

from imapproxy.store import Store, Tx, mailboxes, messages
from tests.integration.clients import imap
from tests.integration.test_robustness import _logged_in
from tests.support.corpus import Account, make_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _append_upstream(
    dovecot: Dovecot, account: Account, mailbox: str, count: int, seed: int
) -> None:
    with imap(dovecot.host, dovecot.port, account) as direct:
        for message in make_messages(count, seed):
            direct.append(mailbox, message.raw)


HEADER_ITEMS = ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE"]


SYNCED = "background sync complete"


def _fetch_lines(untagged: list[bytes]) -> list[bytes]:
    return [line for line in untagged if re.match(rb"\* \d+ FETCH", line)]


def test_partial_fetch_returns_what_it_has_and_says_how_many_it_lacks(
    make_proxy, fresh_user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAPPROXY_SYNC_INTERVAL", "0")  # no background work: bodies stay uncached
    proxy: ProxyProcess = make_proxy()
    raw = _logged_in(proxy, fresh_user, select="INBOX")
    try:
        _, tagged = raw.command(b"f1", b"FETCH 1:10 (BODY.PEEK[])")
        assert tagged.startswith(b"f1 OK"), tagged
        assert proxy.relay is not None
        proxy.relay.cut()
        untagged, tagged = raw.command(b"f2", b"UID FETCH 1:* (UID FLAGS BODY.PEEK[])")
        lines = _fetch_lines(untagged)
        assert len(lines) == 10, untagged[:3]
        assert all(b"BODY[] {" in line for line in lines)
        assert tagged.startswith(b"f2 NO [UNAVAILABLE]"), tagged
        assert b"50 message(s)" in tagged, tagged
        raw.assert_usable()
    finally:
        raw.close()


def test_status_and_select_of_a_never_synced_mailbox_offline_are_unavailable(
    make_proxy, dovecot: Dovecot, fresh_user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAPPROXY_SYNC_INTERVAL", "0")  # so that Later stays never synced
    proxy: ProxyProcess = make_proxy()
    raw = _logged_in(proxy, fresh_user)
    try:
        _, tagged = raw.command(b"l1", b'LIST "" *')
        assert tagged.startswith(b"l1 OK"), tagged
        _, tagged = raw.command(b"s0", b"STATUS INBOX (MESSAGES)")
        assert tagged.startswith(b"s0 OK"), tagged
        # (That first sync took the other folders along.) A folder created upstream
        # afterwards is listed, but its messages never fetched.
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.create_folder("Later")
        _append_upstream(dovecot, fresh_user, "Later", 4, seed=9)

        def listed() -> bool:
            untagged, _ = raw.command(b"l2", b'LIST "" Later')
            return any(b"Later" in line for line in untagged)

        assert _eventually(listed, 15.0)
        assert proxy.relay is not None
        proxy.relay.cut()
        # INBOX was synced: served from the replica as online.
        untagged, tagged = raw.command(b"s1", b"STATUS INBOX (MESSAGES UIDNEXT)")
        assert tagged.startswith(b"s1 OK"), tagged
        assert any(b"MESSAGES 60" in line for line in untagged), untagged
        # Later holds 4 messages upstream but was never opened: no made-up zero.
        for tag, command in (
            (b"s2", b"STATUS Later (MESSAGES)"),
            (b"s3", b"SELECT Later"),
            (b"s4", b"EXAMINE Later"),
        ):
            untagged, tagged = raw.command(tag, command)
            assert not any(b"MESSAGES 0" in u or b"0 EXISTS" in u for u in untagged), untagged
            assert tagged.startswith(tag + b" NO [UNAVAILABLE] "), tagged
            assert len(tagged) > len(tag) + 25, tagged
        raw.assert_usable()
    finally:
        raw.close()


def _list_names(client: IMAPClient) -> set[str]:
    return {name for _, _, name in client.list_folders()}


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether check() came true within seconds: news of a change made directly on the
    upstream reaches the proxy within NOTIFY's delay, not at once."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_mailbox_missing_from_one_list_answer_is_kept_with_its_content(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy: ProxyProcess = make_proxy()
    relay = proxy.relay
    assert relay is not None
    with imap(proxy.host, proxy.port, fresh_user) as client:
        names = _list_names(client)
        assert "Archive/2024" in names
        before = client.select_folder("Archive/2024", readonly=True)
        client.use_uid = False
        bodies = client.fetch(client.search(), ["BODY.PEEK[]"])
        client.unselect_folder()
        proxy.wait_for_log(SYNCED)

        relay.drop_line(rb"\* LIST .*Archive/2024")
        # A folder created elsewhere: the proxy asks the upstream for the list (at
        # once, or on NOTIFY's news of it), and that answer lacks Archive/2024.
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.create_folder("Elsewhere")
        assert _eventually(lambda: "Elsewhere" in _list_names(client))
        assert relay.line_dropped
        assert _list_names(client) == names | {"Elsewhere"}

        relay.reset_counters()
        after = client.select_folder("Archive/2024", readonly=True)
        assert after[b"UIDVALIDITY"] == before[b"UIDVALIDITY"]
        assert client.fetch(client.search(), ["BODY.PEEK[]"]) == bodies
        body_bytes = sum(len(v[b"BODY[]"]) for v in bodies.values())
        assert relay.bytes_down < body_bytes / 10


def _orphan_blobs(state: Path) -> set[int]:
    """Cached content no message of the replica refers to."""
    store = Store(state / "replica")
    try:

        def scan(tx: Tx) -> set[int]:
            used = set()
            cached = set()
            for _key, value in tx.scan(b"accounts", b""):
                account = json.loads(value)["id"]
                for box in mailboxes.all_mailboxes(tx, account):
                    used |= {(account, m.blob) for m in messages.iterate(tx, account, box.id)}
                for key, _ in tx.scan(b"cache", struct.pack(">I", account)):
                    cached.add((account, struct.unpack(">Q", key[4:12])[0]))
            return {blob for _, blob in cached - used}

        return store.read(scan)
    finally:
        store.close()


def test_mailbox_renamed_elsewhere_is_dropped_after_confirmation_and_its_content_freed(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy: ProxyProcess = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        assert "Archive/2024" in _list_names(client)
        client.select_folder("Archive/2024", readonly=True)
        client.use_uid = False
        assert len(client.fetch(client.search(), ["BODY.PEEK[]"])) == 20
        client.unselect_folder()
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.rename_folder("Archive/2024", "Archive/2023")
        assert _eventually(
            lambda: {"Archive/2023", "Archive/2024"} & _list_names(client) == {"Archive/2023"}
        )
    proxy.stop()
    assert _orphan_blobs(proxy.state_dir) == set()


def test_list_and_lsub_offline_equal_online(make_proxy, fresh_user: Account) -> None:
    proxy: ProxyProcess = make_proxy()
    raw = _logged_in(proxy, fresh_user)
    try:

        def lists(tag: bytes) -> list[list[bytes]]:
            return [
                raw.command(tag + b"l", b'LIST "" *')[0],
                raw.command(tag + b"s", b'LSUB "" *')[0],
            ]

        # \Marked and \UnMarked change upstream without any NOTIFY event: the list the
        # proxy refreshes once NOTIFY covers it may differ from the first answer. The
        # reference is the proxy's settled online answer.
        online = lists(b"a0")
        for n in range(1, 20):
            time.sleep(0.3)
            again = lists(b"a%d" % n)
            if again == online:
                break
            online = again
        assert len(online[0]) >= 7 and len(online[1]) >= 5, online
        assert proxy.relay is not None
        proxy.relay.cut()
        offline = []
        for tag, command in ((b"b1", b'LIST "" *'), (b"b2", b'LSUB "" *')):
            untagged, tagged = raw.command(tag, command)
            assert tagged.startswith(tag + b" OK"), tagged
            offline.append(untagged)
        assert offline == online, (online, offline)
    finally:
        raw.close()


def _headers(client: IMAPClient, folder: str) -> dict[int, dict[bytes, object]]:
    exists = client.select_folder(folder, readonly=True)[b"EXISTS"]
    client.use_uid = False
    found = client.fetch(list(range(1, exists + 1)), [*HEADER_ITEMS, "BODY.PEEK[HEADER]"])
    # The proxy puts UID in every FETCH answer (its own UIDs): compare the rest.
    return {seq: {k: v for k, v in items.items() if k != b"UID"} for seq, items in found.items()}


def test_header_sync_works_offline_for_every_folder_after_the_background_sync(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy: ProxyProcess = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        proxy.wait_for_log(SYNCED)
        assert proxy.relay is not None
        proxy.relay.cut()
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            for folder, seeded in fresh_user.mailboxes.items():
                if not seeded:
                    continue
                offline = _headers(client, folder)
                assert len(offline) == len(seeded), folder
                assert offline == _headers(direct, folder), folder


def test_new_messages_get_their_metadata_so_a_full_header_fetch_works_offline(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    """The finding: 20 new messages, a client resync that read only their ENVELOPE,
    then offline a full header FETCH must still answer every message."""
    proxy: ProxyProcess = make_proxy()
    raw = _logged_in(proxy, fresh_user, select="INBOX")
    try:
        proxy.wait_for_log(SYNCED)
        before = len(proxy.log_text())
        _append_upstream(dovecot, fresh_user, "INBOX", 20, seed=99)
        untagged, tagged = raw.command(b"n1", b"NOOP")
        assert tagged.startswith(b"n1 OK"), tagged
        if not any(b"80 EXISTS" in line for line in untagged):
            time.sleep(1.0)
            untagged, _ = raw.command(b"n2", b"NOOP")
        assert any(b"80 EXISTS" in line for line in untagged), untagged
        _, tagged = raw.command(b"e1", b"FETCH 61:80 (ENVELOPE)")
        assert tagged.startswith(b"e1 OK"), tagged
        # The 20 may arrive in one sync or in several (13 + 7 under load).
        _wait_metadata_fetched(proxy, before, "INBOX", 20)
        assert proxy.relay is not None
        proxy.relay.cut()
        untagged, tagged = raw.command(
            b"f1", b"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
        )
        assert tagged.startswith(b"f1 OK"), tagged
        assert len(_fetch_lines(untagged)) == 80
    finally:
        raw.close()


def _wait_metadata_fetched(
    proxy: ProxyProcess, since: int, mailbox: str, count: int, seconds: float = 30.0
) -> None:
    """Until the proxy logged metadata fetched for count messages of mailbox, in all,
    after log offset since."""
    pattern = re.compile(rf"metadata of (\d+) message\(s\) in '{re.escape(mailbox)}' fetched")
    deadline = time.monotonic() + seconds
    while sum(int(n) for n in pattern.findall(proxy.log_text()[since:])) < count:
        assert time.monotonic() < deadline, proxy.log_tail()
        time.sleep(0.1)


def _search_terms(account: Account) -> list[list[str]]:
    inbox = account.mailboxes["INBOX"]
    subject = str(email.message_from_bytes(inbox[4].raw, policy=email.policy.default)["Subject"])
    word = next(w for w in subject.split() if len(w) >= 4 and w.isascii() and w.isalpha())
    sender = email.message_from_bytes(inbox[6].raw, policy=email.policy.default)["From"]
    local_part = sender.addresses[0].username
    message_id = str(
        email.message_from_bytes(inbox[9].raw, policy=email.policy.default)["Message-ID"]
    )
    return [
        ["SUBJECT", word],
        ["FROM", local_part],
        ["HEADER", "Message-ID", message_id],
        ["OR", "SUBJECT", word, "FLAGGED"],
        ["SENTSINCE", "1-Jun-2023"],
        ["NOT", "TO", local_part],
    ]


def test_search_offline_answers_from_cached_headers_and_bodies(
    make_proxy, fresh_user: Account
) -> None:
    proxy: ProxyProcess = make_proxy()
    with imap(proxy.host, proxy.port, fresh_user) as client:
        proxy.wait_for_log(SYNCED)
        client.select_folder("INBOX", readonly=True)
        client.use_uid = False
        terms = _search_terms(fresh_user)
        online = [client.search(criteria) for criteria in terms]
        assert all(online[:3]) and len(online[2]) == 1, online
        body_word = "state"
        online_body = client.search(["BODY", body_word])
        client.fetch(list(range(1, 11)), ["BODY.PEEK[]"])
        assert proxy.relay is not None
        proxy.relay.cut()

        assert [client.search(criteria) for criteria in terms] == online
        raw = _logged_in(proxy, fresh_user, select="INBOX")
        try:
            untagged, tagged = raw.command(b"b1", f"SEARCH BODY {body_word}".encode())
        finally:
            raw.close()
        assert tagged.startswith(b"b1 OK"), tagged
        assert b"50 message(s) not searched" in tagged, tagged
        found = [
            int(n) for line in untagged if line.startswith(b"* SEARCH") for n in line.split()[2:]
        ]
        assert found == [n for n in online_body if n <= 10]
        assert online_body and [n for n in online_body if n > 10], online_body
