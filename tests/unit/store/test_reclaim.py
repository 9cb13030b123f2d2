"""Dropping a mailbox frees the content only it used: never a blob another message
(a COPY) or a queued change (an APPEND in the outbox) still names."""

from __future__ import annotations

from pathlib import Path

from imapproxy.store import Store, Tx, accounts, cache, mailboxes, messages, outbox
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.store.reclaim import drop_mailbox
from imapproxy.types import UID, BlobId, UpstreamUID


def _add(tx: Tx, account: int, box: mailboxes.Mailbox, uid: int, blob: int) -> None:
    message = Message(
        UID(uid), UpstreamUID(uid), (), "01-Jan-2026 00:00:00 +0000", 5, 1, BlobId(blob)
    )
    messages.put(tx, account, box.id, message)  # type: ignore[arg-type]
    cache.put(tx, account, BlobId(blob), Kind.FULL, b"hello")  # type: ignore[arg-type]
    cache.put(tx, account, BlobId(blob), Kind.ENVELOPE, b"(NIL)")  # type: ignore[arg-type]


def test_drop_frees_only_unshared_content(tmp_path: Path) -> None:
    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
        a = store.write(lambda tx: mailboxes.create(tx, account, "A"))
        b = store.write(lambda tx: mailboxes.create(tx, account, "B"))

        def seed(tx: Tx) -> None:
            _add(tx, account, a, 1, 10)  # only in A
            _add(tx, account, a, 2, 11)  # copied to B
            _add(tx, account, b, 1, 11)
            _add(tx, account, a, 3, 12)  # named by a queued APPEND
            outbox.add(tx, account, "append", {"mailbox": 9, "blob": 12})

        store.write(seed)
        assert store.write(lambda tx: drop_mailbox(tx, a)) == 1

        def present(blob: int) -> bool:
            return store.read(lambda tx: cache.has(tx, account, BlobId(blob), Kind.FULL))  # type: ignore[arg-type]

        assert not present(10)
        assert store.read(lambda tx: cache.get(tx, account, BlobId(10), Kind.ENVELOPE)) is None  # type: ignore[arg-type]
        assert present(11) and present(12)
        assert store.read(lambda tx: mailboxes.get(tx, account, a.id)) is None
        assert store.read(lambda tx: list(messages.iterate(tx, account, a.id))) == []
    finally:
        store.close()
