"""RENAME INBOX (RFC 3501 §6.3.5): the messages move to the new mailbox, INBOX stays and
is empty, its children stay where they are; online and offline, through the outbox.

Dovecot 2.3 with Maildir refuses RENAME INBOX itself (NO [CANNOT]); the proxy carries
it out as CREATE plus a MOVE of every message, which the upstream then holds too.
"""

from __future__ import annotations

import re
import time

from tests.integration.raw import RawClient
from tests.support.corpus import Account
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess

REPLAY_TIMEOUT = 20


def _message_ids(client: RawClient, mailbox: str) -> list[str]:
    client.ok(f'EXAMINE "{mailbox}"')
    lines = (
        client.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if _count(client, mailbox)
        else []
    )
    client.ok("UNSELECT")
    return sorted(m.group(0) for m in (re.search(r"<[^>]+>", line) for line in lines) if m)


def _count(client: RawClient, mailbox: str) -> int:
    [line] = client.ok(f'STATUS "{mailbox}" (MESSAGES)')
    return int(re.search(r"MESSAGES (\d+)", line).group(1))  # type: ignore[union-attr]


def _wait_upstream(dovecot: Dovecot, account: Account, through: RawClient, name: str) -> None:
    deadline = time.monotonic() + REPLAY_TIMEOUT
    with RawClient(dovecot.host, dovecot.port, account.user, account.password) as direct:
        while True:
            _, tagged = direct.command(f'STATUS "{name}" (MESSAGES)')
            if tagged.startswith("OK") and _count(direct, "INBOX") == 0:
                return
            assert time.monotonic() < deadline, f"{name} never reached the upstream"
            through.ok('LIST "" "*"')  # replays the outbox first
            time.sleep(0.2)


def test_rename_inbox_moves_its_messages_online(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        before = _message_ids(direct, "INBOX")
    assert before
    with (
        RawClient(proxy.host, proxy.port, user, password) as client,
        RawClient(proxy.host, proxy.port, user, password) as watcher,
    ):
        client.ok('CREATE "INBOX/kid"')
        watcher.ok("SELECT INBOX")
        client.ok('RENAME INBOX "Old mail"')
        expunged = [line for line in watcher.ok("NOOP") if line.endswith(" EXPUNGE")]
        assert len(expunged) == len(before)
        assert _count(client, "INBOX") == 0
        assert _message_ids(client, "Old mail") == before
        names = " ".join(client.ok('LIST "" "*"'))
        assert "INBOX/kid" in names and "Old mail/kid" not in names
        _wait_upstream(dovecot, fresh_user, client, "Old mail")
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        assert _message_ids(direct, "Old mail") == before
        assert _count(direct, "INBOX") == 0
        assert direct.ok('LIST "" "INBOX/kid"')  # INBOX's child stayed where it was


def test_rename_inbox_offline_is_queued_and_replayed(
    dovecot: Dovecot, proxy: ProxyProcess, fresh_user: Account
) -> None:
    user, password = fresh_user.user, fresh_user.password
    with RawClient(proxy.host, proxy.port, user, password) as client:
        before = _message_ids(client, "INBOX")  # the replica knows INBOX now
        assert proxy.relay is not None
        proxy.relay.cut()
        client.ok('RENAME inbox "Away"')
        assert _count(client, "INBOX") == 0
        assert _message_ids(client, "Away") == before
        proxy.relay.resume()
        _wait_upstream(dovecot, fresh_user, client, "Away")
    with RawClient(dovecot.host, dovecot.port, user, password) as direct:
        assert _message_ids(direct, "Away") == before


def test_rename_inbox_refusals(proxy: ProxyProcess, fresh_user: Account) -> None:
    with RawClient(proxy.host, proxy.port, fresh_user.user, fresh_user.password) as client:
        _, under_itself = client.command('RENAME INBOX "INBOX/sub"')
        _, existing = client.command('RENAME INBOX "Sent"')
        assert _count(client, "INBOX") == len(fresh_user.mailboxes["INBOX"])
    assert under_itself.startswith("NO "), under_itself
    assert existing.startswith("NO [ALREADYEXISTS]"), existing
