"""A read that implies \\Seen (FETCH BODY[] without PEEK) is answered as soon as the body
is there; the \\Seen goes to the upstream through the outbox afterwards (issue 6)."""

from __future__ import annotations

import time

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _unseen_uid(client: object, folder: str = "INBOX") -> int:
    client.select_folder(folder)  # type: ignore[attr-defined]
    [uid, *_] = client.search(["UNSEEN"])  # type: ignore[attr-defined]
    return int(uid)


def _upstream_seen(dovecot: Dovecot, account: Account, uid_by_id: bytes) -> bool:
    with imap(dovecot.host, dovecot.port, account) as direct:
        direct.select_folder("INBOX", readonly=True)
        found = direct.search(["HEADER", "Message-ID", uid_by_id.decode()])
        flags = direct.get_flags(found)
        return all(b"\\Seen" in f for f in flags.values())


def test_the_implied_seen_never_delays_the_body_and_reaches_the_upstream_after(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    assert proxy.relay is not None
    with imap(proxy.host, proxy.port, fresh_user) as client:
        uid = _unseen_uid(client)
        cached = client.fetch([uid], ["BODY.PEEK[]", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        body = cached[uid][b"BODY[]"]
        message_id = cached[uid][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].split(b":", 1)[1].strip()
        proxy.relay.stall()  # the upstream answers nothing from now on
        try:
            start = time.monotonic()
            answer = client.fetch([uid], ["BODY[]"])
            elapsed = time.monotonic() - start
        finally:
            proxy.relay.unstall()
        assert answer[uid][b"BODY[]"] == body
        assert b"\\Seen" in answer[uid][b"FLAGS"]
        # Before: the FETCH waited for the outbox's STORE (up to its 3 s write wait).
        assert elapsed < 1.0, elapsed
    deadline = time.monotonic() + 15
    while not _upstream_seen(dovecot, fresh_user, message_id):
        assert time.monotonic() < deadline, "the \\Seen never reached the upstream"
        time.sleep(0.2)
