"""Reading offline: everything the replica holds is served as online, what it lacks is
refused with NO [UNAVAILABLE] and a reason, never answered as empty or zero."""

from __future__ import annotations

import re

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


def _fetch_lines(untagged: list[bytes]) -> list[bytes]:
    return [line for line in untagged if re.match(rb"\* \d+ FETCH", line)]


def test_partial_fetch_returns_what_it_has_and_says_how_many_it_lacks(
    make_proxy, fresh_user: Account
) -> None:
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
    make_proxy, fresh_user: Account
) -> None:
    proxy: ProxyProcess = make_proxy()
    raw = _logged_in(proxy, fresh_user)
    try:
        _, tagged = raw.command(b"l1", b'LIST "" *')
        assert tagged.startswith(b"l1 OK"), tagged
        _, tagged = raw.command(b"s0", b"STATUS INBOX (MESSAGES)")
        assert tagged.startswith(b"s0 OK"), tagged
        assert proxy.relay is not None
        proxy.relay.cut()
        # INBOX was synced: served from the replica as online.
        untagged, tagged = raw.command(b"s1", b"STATUS INBOX (MESSAGES UIDNEXT)")
        assert tagged.startswith(b"s1 OK"), tagged
        assert any(b"MESSAGES 60" in line for line in untagged), untagged
        # Sent holds 4 messages upstream but was never opened: no made-up zero.
        for tag, command in (
            (b"s2", b"STATUS Sent (MESSAGES)"),
            (b"s3", b"SELECT Sent"),
            (b"s4", b"EXAMINE Sent"),
        ):
            untagged, tagged = raw.command(tag, command)
            assert not any(b"MESSAGES 0" in u or b"0 EXISTS" in u for u in untagged), untagged
            assert tagged.startswith(tag + b" NO [UNAVAILABLE] "), tagged
            assert len(tagged) > len(tag) + 25, tagged
        raw.assert_usable()
    finally:
        raw.close()
