"""What STATUS and SELECT report about a whole mailbox, counted from its records."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imapproxy.account import MailboxStats, _compute_stats
from imapproxy.store import Store, accounts, mailboxes, messages
from imapproxy.store._tx import Tx
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.types import UID, AccountId, BlobId, UpstreamUID

DATE = "01-Jan-2026 00:00:00 +0000"


def _replica(directory: Path) -> tuple[Store, AccountId, Mailbox]:
    """A store with one account and its INBOX, empty."""
    store = Store(directory / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    return store, account, box


def test_counts_over_compact_and_json_records(tmp_path: Path) -> None:
    store, account, box = _replica(tmp_path)
    listed = [
        Message(UID(1), UpstreamUID(1), ("\\Seen", "$Label1"), DATE, 10, 1, BlobId(1)),
        Message(UID(2), UpstreamUID(2), ("\\seen",), DATE, 20, 1, BlobId(2)),  # any case
        Message(UID(3), UpstreamUID(3), ("\\Flagged", "Grüße"), DATE, 30, 1, BlobId(3)),
        Message(UID(4), UpstreamUID(4), ("a b",), DATE, 40, 1, BlobId(4)),  # a JSON record
        Message(UID(5), UpstreamUID(5), ("\\Seen",), DATE, 50, 1, BlobId(5)),
    ]

    def fill(tx: object) -> None:
        for message in listed:
            messages.put(tx, account, box.id, message)  # type: ignore[arg-type]

    store.write(fill)
    stats = store.read(lambda tx: _compute_stats(tx, box))
    # Unseen: 3 and 4; the first of them is message 3 (in UID order).
    assert stats == MailboxStats(5, 2, 150, ("$Label1", "Grüße", "a b"), 3)
    store.close()


def test_the_same_flags_in_an_older_record_count_with_the_compact_ones(tmp_path: Path) -> None:
    """A set of flags stored both ways is one set: its first message is the earlier."""
    store, account, box = _replica(tmp_path)
    listed = [
        Message(UID(1), UpstreamUID(1), ("\\Seen",), DATE, 1, 1, BlobId(1)),
        Message(UID(3), UpstreamUID(3), ("\\Flagged",), DATE, 4, 1, BlobId(3)),
    ]
    older = b'[2,["\\\\Flagged"],"01-Jan-2026 00:00:00 +0000",2,1,2]'  # as written before

    def fill(tx: Tx) -> None:
        for message in listed:
            messages.put(tx, account, box.id, message)
        tx.put(b"messages", messages.prefix(account, box.id) + (2).to_bytes(4, "big"), older)

    store.write(fill)
    tally = store.read(lambda tx: messages.flag_tally(tx, account, box.id))
    assert tally.by_flags == {(b"\\Seen",): (1, 1), (b"\\Flagged",): (2, 2)}
    stats = store.read(lambda tx: _compute_stats(tx, box))
    assert stats == MailboxStats(3, 2, 7, (), 2)
    store.close()


_FLAGS = st.lists(
    st.sampled_from(["\\Seen", "\\SEEN", "\\Answered", "\\Flagged", "$Label1", "Grüße", "a b"]),
    max_size=3,
    unique=True,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_FLAGS, max_size=30))
def test_counts_by_set_agree_with_a_count_per_message(flag_lists: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store, account, box = _replica(Path(directory))
        listed = [
            Message(UID(n), UpstreamUID(n), tuple(f), DATE, n, 1, BlobId(n))
            for n, f in enumerate(flag_lists, start=1)
        ]
        store.write(lambda tx: [messages.put(tx, account, box.id, m) for m in listed])
        stats = store.read(lambda tx: _compute_stats(tx, box))
        store.close()
    unseen = [n for n, m in enumerate(listed, 1) if not any(f.upper() == "\\SEEN" for f in m.flags)]
    keywords = sorted({f for m in listed for f in m.flags if not f.startswith("\\")})
    size = sum(m.size for m in listed)
    expected = MailboxStats(
        len(listed), len(unseen), size, tuple(keywords), min(unseen, default=None)
    )
    assert stats == expected
