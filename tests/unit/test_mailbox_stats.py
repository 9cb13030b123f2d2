"""What STATUS and SELECT report about a whole mailbox, counted from its records."""

from __future__ import annotations

from pathlib import Path

from imapproxy.account import MailboxStats, _compute_stats
from imapproxy.store import Store, accounts, mailboxes, messages
from imapproxy.store.messages import Message
from imapproxy.types import UID, BlobId, UpstreamUID


def test_counts_over_compact_and_json_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    date = "01-Jan-2026 00:00:00 +0000"
    listed = [
        Message(UID(1), UpstreamUID(1), ("\\Seen", "$Label1"), date, 10, 1, BlobId(1)),
        Message(UID(2), UpstreamUID(2), ("\\seen",), date, 20, 1, BlobId(2)),  # any case
        Message(UID(3), UpstreamUID(3), ("\\Flagged", "Grüße"), date, 30, 1, BlobId(3)),
        Message(UID(4), UpstreamUID(4), ("a b",), date, 40, 1, BlobId(4)),  # a JSON record
        Message(UID(5), UpstreamUID(5), ("\\Seen",), date, 50, 1, BlobId(5)),
    ]

    def fill(tx: object) -> None:
        for message in listed:
            messages.put(tx, account, box.id, message)  # type: ignore[arg-type]

    store.write(fill)
    stats = store.read(lambda tx: _compute_stats(tx, box))
    # Unseen: 3 and 4; the first of them is message 3 (in UID order).
    assert stats == MailboxStats(5, 2, 150, ("$Label1", "Grüße", "a b"), 3)
    store.close()
