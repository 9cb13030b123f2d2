"""The replica stays equal to the upstream around our own writes, concurrent logins and
failed writes: what the client was told is what happened."""

from __future__ import annotations

import threading
import time

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _message(tag: str) -> bytes:
    return (
        f"From: w@example.org\r\nTo: r@example.org\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@consistency.test>\r\n\r\nbody of {tag}\r\n"
    ).encode()


def _upstream_count(dovecot: Dovecot, account: Account, mailbox: str = "INBOX") -> int:
    with imap(dovecot.host, dovecot.port, account) as direct:
        return direct.select_folder(mailbox, readonly=True)[b"EXISTS"]


def test_our_own_appends_follow_later_upstream_changes(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.select_folder("INBOX")
        client.append("INBOX", _message("mine"))
        client.noop()
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("INBOX")
            [mine] = direct.search(["HEADER", "Message-ID", "mine@consistency.test"])
            direct.add_flags([mine], [b"\\Flagged"])
        client.noop()
        [local] = client.search(["HEADER", "Message-ID", "mine@consistency.test"])
        assert b"\\Flagged" in client.get_flags([local])[local]
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.select_folder("INBOX")
            oldest = direct.search(["ALL"])[0]
            direct.delete_messages([oldest, mine])
            direct.expunge()
        client.noop()
        exists = client.select_folder("INBOX")[b"EXISTS"]
    assert exists == _upstream_count(dovecot, fresh_user)


def test_move_into_the_same_mailbox_keeps_uids_unique(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with imap(proxy.host, proxy.port, fresh_user) as client:
        client.select_folder("INBOX")
        last = client.search(["ALL"])[-1]
        client.move([last], "INBOX")
        appended = client.append("INBOX", _message("after-move"))
        uids = client.search(["ALL"])
        assert len(uids) == len(set(uids))
        assert str(max(uids)).encode() in appended
        assert len(uids) == _upstream_count(dovecot, fresh_user)


def test_parallel_first_logins_share_one_account(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    before = _upstream_count(dovecot, fresh_user, "Empty")
    errors: list[BaseException] = []

    def client_appends(n: int) -> None:
        try:
            with imap(proxy.host, proxy.port, fresh_user) as client:
                client.append("Empty", _message(f"parallel-{n}"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client_appends, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert _upstream_count(dovecot, fresh_user, "Empty") == before + 4


def test_a_write_made_offline_is_applied_at_once_and_replayed_once(
    dovecot: Dovecot, make_proxy, fresh_user: Account
) -> None:
    proxy = make_proxy()
    before = _upstream_count(dovecot, fresh_user, "Empty")
    with imap(proxy.host, proxy.port, fresh_user) as client:
        # Seen once online: offline, a folder never synced is refused, not shown empty.
        client.select_folder("Empty")
        client.select_folder("INBOX")
        proxy.relay.cut()
        answer = client.append("Empty", _message("while-cut"))
        assert b"APPENDUID" in answer, answer
        assert client.select_folder("Empty")[b"EXISTS"] == before + 1
        assert _upstream_count(dovecot, fresh_user, "Empty") == before
        proxy.relay.resume()
        deadline = time.monotonic() + 30
        while _upstream_count(dovecot, fresh_user, "Empty") == before:
            assert time.monotonic() < deadline, "the offline APPEND never reached the upstream"
            client.noop()
            time.sleep(0.3)
        client.append("Empty", _message("after"))
        client.noop()
        assert client.select_folder("Empty")[b"EXISTS"] == before + 2
    assert _upstream_count(dovecot, fresh_user, "Empty") == before + 2
