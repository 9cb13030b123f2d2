"""A first session costs no more upstream work than the client's own commands need
(issue 6): the message list a SELECT brings in carries each message's ENVELOPE and
BODYSTRUCTURE, so the header FETCH a client sends next is answered from the replica,
with no second pass over the list."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import imap
from tests.support.corpus import Account, make_messages, open_mailboxes, seed_messages
from tests.support.dovecot import Dovecot
from tests.support.proxy import ProxyProcess
from tests.support.relay import CommandLog, Relay

MESSAGES = 60
HEADER_ITEMS = ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE"]


@pytest.fixture
def recorded(dovecot: Dovecot, tmp_path: Path) -> Iterator[tuple[Account, CommandLog, int]]:
    """A fresh account, and a proxy whose upstream commands are recorded."""
    user = f"first-{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user, f"{user}-pw")
    seed_messages(dovecot.mail_root(user), "INBOX", make_messages(MESSAGES, seed=7))
    open_mailboxes(dovecot, user, ["INBOX"])
    commands = CommandLog()
    with (
        Relay(dovecot.host, dovecot.port, tap=commands.tap) as relay,
        ProxyProcess(f"imap+plain://{dovecot.host}:{relay.port}", tmp_path / "state") as proxy,
    ):
        yield Account(user, f"{user}-pw", {}), commands, proxy.port


def test_the_header_fetch_after_a_first_select_asks_the_upstream_nothing(
    dovecot: Dovecot, recorded: tuple[Account, CommandLog, int]
) -> None:
    account, commands, port = recorded
    with imap("127.0.0.1", port, account) as client:
        client.select_folder("INBOX", readonly=True)
        mark = commands.mark()
        through = client.fetch(client.search("ALL"), HEADER_ITEMS)
    # (The background may meanwhile list other folders: a message list, with INTERNALDATE.)
    second_pass = [
        c
        for c in commands.since(mark)
        if ("ENVELOPE" in c or "BODYSTRUCTURE" in c) and "INTERNALDATE" not in c
    ]
    assert second_pass == [], second_pass
    with imap(dovecot.host, dovecot.port, account) as direct:
        direct.select_folder("INBOX", readonly=True)
        expected = direct.fetch(direct.search("ALL"), HEADER_ITEMS)
    assert len(through) == MESSAGES
    for uid, item in expected.items():
        for name in (b"ENVELOPE", b"BODYSTRUCTURE", b"RFC822.SIZE", b"INTERNALDATE"):
            assert through[uid][name] == item[name], (uid, name)
