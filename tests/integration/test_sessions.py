"""Several clients on one account see each other's changes and the upstream's, with
sequence numbers and untagged EXISTS/EXPUNGE/FETCH as RFC 3501/9051 require."""

from __future__ import annotations

import time

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

NEW_MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: pushed\r\nMessage-ID: <pushed@x>\r\n\r\nhello\r\n"


def test_two_clients_see_each_others_flag_changes_and_expunges(
    proxy: ProxyProcess, fresh_user: Account
) -> None:
    with (
        imap(proxy.host, proxy.port, fresh_user) as a,
        imap(proxy.host, proxy.port, fresh_user) as b,
    ):
        exists = a.select_folder("INBOX")[b"EXISTS"]
        assert b.select_folder("INBOX")[b"EXISTS"] == exists
        a.use_uid = b.use_uid = False
        a.add_flags([2], [b"\\Flagged", b"\\Deleted"])
        responses = b.noop()[1]
        assert any(r[1] == b"FETCH" and r[0] == 2 for r in responses), responses

        a.expunge()
        responses = b.noop()[1]
        assert (2, b"EXPUNGE") in responses, responses
        # Both now number the remaining messages the same way.
        # (imaplib keeps earlier unsolicited FETCHes and imapclient merges them in: compare UIDs)
        uids_a = {
            seq: item[b"UID"] for seq, item in a.fetch(list(range(1, exists)), ["UID"]).items()
        }
        uids_b = {
            seq: item[b"UID"] for seq, item in b.fetch(list(range(1, exists)), ["UID"]).items()
        }
        assert uids_a == uids_b
        assert len(uids_a) == exists - 1


def test_no_expunge_is_sent_during_fetch(proxy: ProxyProcess, fresh_user: Account) -> None:
    with (
        imap(proxy.host, proxy.port, fresh_user) as a,
        imap(proxy.host, proxy.port, fresh_user) as b,
    ):
        a.select_folder("INBOX")
        b.select_folder("INBOX")
        a.use_uid = b.use_uid = False
        a.add_flags([1], [b"\\Deleted"])
        a.expunge()
        # FETCH must not shift B's sequence numbers: message 1 is still 1 for B until NOOP.
        b._imap.untagged_responses.clear()
        b.fetch([2], ["FLAGS"])
        assert "EXPUNGE" not in b._imap.untagged_responses
        assert (1, b"EXPUNGE") in b.noop()[1]


def test_idle_pushes_changes_from_other_sessions_and_from_upstream(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with (
        imap(proxy.host, proxy.port, fresh_user) as watcher,
        imap(proxy.host, proxy.port, fresh_user) as writer,
    ):
        exists = watcher.select_folder("INBOX")[b"EXISTS"]
        watcher.idle()
        writer.append("INBOX", NEW_MESSAGE)
        pushed = watcher.idle_check(timeout=10)
        assert (exists + 1, b"EXISTS") in pushed, pushed
        watcher.idle_done()

        # A change made directly on the upstream reaches the idling client too.
        watcher.idle()
        with imap(dovecot.host, dovecot.port, fresh_user) as direct:
            direct.append("INBOX", NEW_MESSAGE)
        deadline = time.monotonic() + 15
        seen: list = []
        while time.monotonic() < deadline and (exists + 2, b"EXISTS") not in seen:
            seen += watcher.idle_check(timeout=2)
        watcher.idle_done()
        assert (exists + 2, b"EXISTS") in seen, seen
