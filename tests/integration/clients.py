"""Small helpers for driving real IMAP clients (imapclient, imaplib) in the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from imapclient import IMAPClient

from tests.support.corpus import Account

TIMEOUT = 30


@contextmanager
def imap(host: str, port: int, account: Account | None = None) -> Iterator[IMAPClient]:
    client = IMAPClient(host, port=port, ssl=False, timeout=TIMEOUT)
    try:
        if account is not None:
            client.login(account.user, account.password)
        yield client
    finally:
        try:
            client.logout()
        except (OSError, IMAPClient.Error, IMAPClient.AbortError):
            client.shutdown()


def without_recent(flags: tuple[bytes, ...]) -> set[bytes]:
    """\\Recent is per session on the upstream and never replicated; compare the rest."""
    return {f for f in flags if f.upper() != b"\\RECENT"}


def _flags_by_message_id(client: IMAPClient, mailbox: str) -> dict[bytes, frozenset[bytes]]:
    client.select_folder(mailbox, readonly=True)
    try:
        found = client.search(["ALL"])
        items = ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
        fetched = client.fetch(found, items) if found else {}
    finally:
        client.unselect_folder()
    return {
        item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].strip(): frozenset(without_recent(item[b"FLAGS"]))
        for item in fetched.values()
    }


def caught_up(
    direct: tuple[str, int], proxy: tuple[str, int], account: Account, *mailboxes: str
) -> None:
    """Wait until the proxy shows these mailboxes as the upstream has them (the same
    messages, by Message-ID, with the same flags). A change made directly on the
    upstream reaches the proxy within NOTIFY's delay (about half a second with Dovecot),
    not at once: a test that changes the upstream and then compares waits here first."""
    deadline = time.monotonic() + 10.0
    with imap(*direct, account) as upstream, imap(*proxy, account) as through:
        for mailbox in mailboxes:
            want = _flags_by_message_id(upstream, mailbox)
            while (seen := _flags_by_message_id(through, mailbox)) != want:
                assert time.monotonic() < deadline, (mailbox, want, seen)
                time.sleep(0.1)
