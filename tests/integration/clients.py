"""Small helpers for driving real IMAP clients (imapclient, imaplib) in the tests."""

from __future__ import annotations

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
