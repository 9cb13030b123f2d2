"""A body asked for after another client moved its message away upstream (before the
proxy heard of it): the client hears EXPUNGEISSUED, as from Dovecot (RFC 5530), and
the EXPUNGE follows at its next command; never an endless "try later"."""

from __future__ import annotations

import time

from tests.integration.clients import imap
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def test_a_body_moved_away_meanwhile_is_expungeissued_then_expunged(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    with (
        imap(proxy.host, proxy.port, fresh_user) as client,
        imap(dovecot.host, dovecot.port, fresh_user) as direct,
    ):
        exists = client.select_folder("INBOX")[b"EXISTS"]
        last = client.search(["ALL"])[-1]
        direct.select_folder("INBOX")
        direct.move([direct.search(["ALL"])[-1]], "Archive")
        # At once, before the upstream's notification reaches the proxy (about 0.5 s).
        typ, data = client._imap.uid("FETCH", str(last), "(BODY.PEEK[])")
        assert typ == "NO", data
        assert b"EXPUNGEISSUED" in data[0], data
        deadline = time.monotonic() + 10
        while True:
            responses = client.noop()[1]
            if any(len(r) > 1 and r[1] == b"EXPUNGE" for r in responses):
                break
            assert time.monotonic() < deadline, "no EXPUNGE followed"
            time.sleep(0.2)
        assert len(client.search(["ALL"])) == exists - 1
