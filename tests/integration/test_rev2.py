"""IMAP4rev2 (RFC 9051) next to IMAP4rev1: what a client that sent ``ENABLE IMAP4rev2``
relies on, and that a rev1 client on the same account sees no change.

Dovecot 2.3 is no IMAP4rev2 server, so there is no equality test here: each check is
the RFC 9051 rule (Appendix A and E) the client depends on, against the same account
seen by a rev1 session and by Dovecot directly.
"""

from __future__ import annotations

import re

from imapproxy.server import rev2
from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess


def _rev2(proxy: ProxyProcess, account: Account) -> RawClient:
    client = RawClient(proxy.host, proxy.port, account.user, account.password)
    assert client.ok("ENABLE IMAP4rev2") == ["* ENABLED IMAP4rev2"]
    return client


def test_a_rev2_session_and_a_rev1_session_side_by_side(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        direct.append("INBOX", "brand new")  # \Recent for the first session to select
    inbox = len(fresh_user.mailboxes["INBOX"]) + 1
    with _rev2(proxy, fresh_user) as new, RawClient(proxy.host, proxy.port, user, password) as old:
        # SELECT: no RECENT, no UNSEEN code (E.11, E.12); a LIST for the mailbox (E.10).
        selected = new.ok("SELECT INBOX")
        assert f"* {inbox} EXISTS" in selected
        assert '* LIST (\\HasNoChildren) "/" INBOX' in selected
        assert not [line for line in selected if "RECENT" in line or "[UNSEEN" in line]
        # No \Recent in FETCH, though this session claimed the new message (E.12).
        flags = new.ok(f"FETCH {inbox} (FLAGS)")
        assert "\\Recent" not in flags[0] and "UID" in flags[0]
        # SEARCH answers with ESEARCH (E.4), ALL when no RETURN is given.
        assert new.ok('SEARCH SUBJECT "brand new"') == [f'* ESEARCH (TAG "t5") ALL {inbox}']
        [uid_answer] = new.ok("UID SEARCH DELETED")
        assert uid_answer == '* ESEARCH (TAG "t6") UID'
        # STATUS DELETED (E.3).
        new.ok(f"STORE {inbox} +FLAGS.SILENT (\\Deleted)")
        assert new.ok("STATUS INBOX (DELETED MESSAGES)") == [
            f"* STATUS INBOX (DELETED 1 MESSAGES {inbox})"
        ]
        # The rev1 session on the same account keeps the rev1 forms.
        selected = old.ok("EXAMINE INBOX")
        assert "* 0 RECENT" in selected
        assert not [line for line in selected if line.startswith("* LIST")]
        assert old.ok("SEARCH DELETED") == [f"* SEARCH {inbox}"]


def test_mailbox_names_are_utf8_for_rev2_and_modified_utf7_for_rev1(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with _rev2(proxy, fresh_user) as new:
        new.ok('CREATE "Café/Straße & Co"')
        listed = new.ok('LIST "" "Caf*"')
        status = new.ok('STATUS "Café/Straße & Co" (MESSAGES)')
        selected = new.ok('SELECT "Café/Straße & Co"')
    # A level that is no mailbox is \NonExistent (LIST-EXTENDED rules, E.2); the names
    # come as UTF-8 (literals here), never as modified UTF-7 (Appendix A).
    level = next(line for line in listed if line.endswith("Café"))
    assert level.startswith('* LIST (\\NonExistent \\HasChildren) "/" {5}')
    assert any(line.endswith("Café/Straße & Co") for line in listed)
    assert status[0].endswith("Café/Straße & Co (MESSAGES 0)")
    assert any(line.endswith("Café/Straße & Co") for line in selected)
    with RawClient(proxy.host, proxy.port, user, password) as old:
        listed = old.ok('LIST "" "Caf*"')
    assert set(listed) == {
        '* LIST (\\Noselect \\HasChildren) "/" "Caf&AOk-"',
        '* LIST (\\HasNoChildren) "/" "Caf&AOk-/Stra&AN8-e &- Co"',
    }
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        assert direct.ok('LIST "" "Caf&AOk-/*"') == [
            '* LIST (\\HasNoChildren) "/" "Caf&AOk-/Stra&AN8-e &- Co"'
        ]


def test_imap4rev2_is_advertised_only_with_everything_it_folds_in(
    proxy: ProxyProcess, fresh_user: Account
) -> None:
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        [line] = client.ok("CAPABILITY")
    capabilities = line.split()[2:]
    assert "IMAP4rev1" in capabilities
    assert ("IMAP4rev2" in capabilities) == (set(capabilities) >= rev2.FOLDED)
    assert re.match(r"\* CAPABILITY IMAP4rev1 ", line)
