"""Benchmark accounts: one Dovecot user per mailbox size, seeded straight into Maildir.

Seeding over IMAP APPEND would take minutes at 10,000 messages; writing the Maildir
files takes seconds. The user then logs in once so Dovecot builds its indexes and
assigns UIDs before anything is timed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.corpus import make_messages, open_mailboxes, seed_messages
from tests.support.dovecot import Dovecot

#: Folders besides INBOX: (message count, generator seed). Small, but LIST and STATUS
#: must have real work, including a nested folder and an empty one.
OTHER_FOLDERS: dict[str, tuple[int, int]] = {
    "Archive/2024": (12, 101),
    "Sent": (6, 102),
    "Drafts": (3, 103),
    "Lists/python": (8, 104),
    "Empty": (0, 105),
}


@dataclass(frozen=True)
class BenchUser:
    """A seeded login and the size of its INBOX."""

    name: str
    password: str
    inbox_size: int


def seed_user(dovecot: Dovecot, inbox_size: int, name: str | None = None) -> BenchUser:
    """Create ``name`` (``bench<N>``) with ``inbox_size`` INBOX messages plus ``OTHER_FOLDERS``.

    The INBOX seed is the size itself, so a given N always yields the same mailbox and
    figures from different runs compare like with like.
    """
    name = name or f"bench{inbox_size}"
    user = BenchUser(name, f"{name}-pw", inbox_size)
    dovecot.add_user(user.name, user.password)
    root = dovecot.mail_root(user.name)
    seed_messages(root, "INBOX", make_messages(inbox_size, seed=inbox_size))
    for folder, (count, seed) in OTHER_FOLDERS.items():
        seed_messages(root, folder, make_messages(count, seed=seed))
    open_mailboxes(dovecot, user.name, ["INBOX", *OTHER_FOLDERS])
    return user
