"""A queued entry that cannot be decoded is assumed to touch everything, never nothing:
the list sync must not drop a mailbox it might name."""

from __future__ import annotations

from imapproxy.outbox.folders import CreateMailbox
from imapproxy.outbox.runner import pending_mailboxes
from imapproxy.store.outbox import Entry
from imapproxy.types import AccountId, MailboxId


def _entry(seq: int, op: str, args: dict) -> Entry:
    return Entry(AccountId(1), seq, op, args, 0.0)


def test_readable_entries_name_their_mailboxes() -> None:
    create = CreateMailbox("Trips", 7)
    assert pending_mailboxes([_entry(1, create.name, create.to_json())]) == {MailboxId(7)}


def test_an_unreadable_entry_protects_every_mailbox() -> None:
    create = CreateMailbox("Trips", 7)
    entries = [
        _entry(1, create.name, create.to_json()),
        _entry(2, "create", {"no such field": True}),
        _entry(3, "an operation from a newer version", {}),
    ]
    assert pending_mailboxes(entries) is None
