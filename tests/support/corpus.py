"""Test mail corpus: message generation, Maildir seeding and the standard test account.

This is the module tests and benchmarks import; the pieces live in ``messages`` (what the
mail looks like) and ``maildir`` (how it lands on disk).
"""

from __future__ import annotations

import imaplib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support import mutf7
from tests.support.maildir import FlagSpec, mailbox_dir, seed_mailbox
from tests.support.mailgen import GeneratedMessage
from tests.support.messages import make_messages

if TYPE_CHECKING:
    from tests.support.dovecot import Dovecot

__all__ = [
    "KOREAN_FOLDER",
    "STANDARD_ACCOUNT",
    "Account",
    "FlagSpec",
    "GeneratedMessage",
    "imap_name",
    "mailbox_dir",
    "make_messages",
    "seed_mailbox",
    "seed_messages",
    "seed_standard_account",
    "standard_mailboxes",
]

KOREAN_FOLDER = "받은편지함"
EMPTY_FOLDER = "Empty"

#: Mailbox (Unicode IMAP name) -> (message count, generator seed) of the standard account.
STANDARD_ACCOUNT: dict[str, tuple[int, int]] = {
    "INBOX": (60, 1),
    "Archive/2024": (20, 2),
    KOREAN_FOLDER: (5, 3),
    "Sent": (4, 4),
    EMPTY_FOLDER: (0, 5),
}


@dataclass(frozen=True)
class Account:
    """A seeded login: what tests need to log in and to know what should be there."""

    user: str
    password: str
    mailboxes: dict[str, list[GeneratedMessage]]


def imap_name(mailbox: str) -> str:
    """The mailbox name as sent on the wire (modified UTF-7), e.g. for SELECT or STATUS."""
    return mutf7.encode(mailbox)


def seed_messages(maildir_root: Path, mailbox: str, messages: Sequence[GeneratedMessage]) -> Path:
    """``seed_mailbox`` for the output of ``make_messages`` (raw bytes plus flags)."""
    return seed_mailbox(
        maildir_root, mailbox, [m.raw for m in messages], [m.flags for m in messages]
    )


def standard_mailboxes() -> dict[str, list[GeneratedMessage]]:
    """The messages of ``STANDARD_ACCOUNT`` per mailbox (deterministic, so always equal)."""
    return {mb: make_messages(n, seed) for mb, (n, seed) in STANDARD_ACCOUNT.items()}


def seed_standard_account(dovecot: Dovecot, user: str) -> dict[str, list[GeneratedMessage]]:
    """Seed ``user`` (already added to ``dovecot``) with ``STANDARD_ACCOUNT``.

    Returns what was seeded per mailbox, so tests can compare against it. If Dovecot is
    running, the user logs in once to SELECT every mailbox (building indexes and assigning
    UIDs now, not during the first timed test) and to subscribe the seeded folders.
    """
    if user not in dovecot.users:
        raise KeyError(f"add {user!r} to Dovecot before seeding it")
    root = dovecot.mail_root(user)
    seeded = standard_mailboxes()
    for mailbox, messages in seeded.items():
        seed_messages(root, mailbox, messages)
    if dovecot.running:
        open_mailboxes(dovecot, user, list(seeded))
    return seeded


def open_mailboxes(dovecot: Dovecot, user: str, mailboxes: list[str]) -> None:
    """Log in as ``user``, subscribe and SELECT each mailbox so Dovecot indexes it.

    The SELECT is read-write on purpose: it consumes ``\\Recent``, so no later test's
    result depends on whether it happened to be the first session to open the mailbox.
    """
    with imaplib.IMAP4(dovecot.host, dovecot.port, timeout=30) as client:
        client.login(user, dovecot.users[user])
        for mailbox in mailboxes:
            quoted = '"' + imap_name(mailbox) + '"'
            client.subscribe(quoted)
            typ, data = client.select(quoted)
            if typ != "OK":
                raise RuntimeError(f"SELECT {mailbox!r} failed: {data!r}")
