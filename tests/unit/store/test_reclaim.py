"""Dropping a mailbox frees the content only it used: never a blob another message
(a COPY) or a queued change (an APPEND in the outbox) still names."""

from __future__ import annotations

from pathlib import Path

from imapproxy.store import Store, Tx, accounts, cache, mailboxes, messages, outbox, usage
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


def _present(store: Store, account: int, blob: int) -> bool:
    return store.read(lambda tx: cache.has(tx, account, BlobId(blob), Kind.FULL))  # type: ignore[arg-type]


def _anything(store: Store, account: int, blob: int) -> bool:
    prefix = account.to_bytes(4, "big") + blob.to_bytes(8, "big")
    return store.read(lambda tx: any(True for _ in tx.keys(b"cache", prefix)))


def _setup(tmp_path: Path) -> tuple[Store, int, mailboxes.Mailbox, mailboxes.Mailbox]:
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    a = store.write(lambda tx: mailboxes.create(tx, account, "A"))
    b = store.write(lambda tx: mailboxes.create(tx, account, "B"))
    return store, account, a, b


def _remove(store: Store, account: int, box: mailboxes.Mailbox, uid: int) -> None:
    def remove(tx: Tx) -> None:
        message = messages.get(tx, account, box.id, UID(uid))  # type: ignore[arg-type]
        assert message is not None
        messages.remove(tx, account, box.id, message)  # type: ignore[arg-type]

    store.write(remove)


def test_expunged_content_is_freed_unless_a_copy_or_a_queued_change_needs_it(
    tmp_path: Path,
) -> None:
    store, account, a, b = _setup(tmp_path)
    try:

        def seed(tx: Tx) -> None:
            _add(tx, account, a, 1, 10)  # only in A
            _add(tx, account, a, 2, 11)  # copied to B
            _add(tx, account, b, 1, 11)
            _add(tx, account, a, 3, 12)  # its EXPUNGE is queued: a refusal brings it back

        store.write(seed)
        ref = [3, 3, "01-Jan-2026 00:00:00 +0000", 5, None, [], 12]
        entry = store.write(
            lambda tx: outbox.add(tx, account, "expunge", {"mailbox": int(a.id), "refs": [ref]})
        )
        for uid in (1, 2, 3):
            _remove(store, account, a, uid)
        assert not _anything(store, account, 10)  # body and metadata gone with the message
        assert _present(store, account, 11)  # B still has it
        assert _present(store, account, 12)  # the queued EXPUNGE may still need it
        # The EXPUNGE replayed: the entry leaves the queue, and the content with it.
        store.write(lambda tx: outbox.remove(tx, entry))
        assert not _anything(store, account, 12)
        _remove(store, account, b, 1)
        assert not _anything(store, account, 11)
        assert store.read(lambda tx: usage.total(tx, account)) == 0  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_refused_append_is_freed_once_the_user_deletes_it_from_recovered(
    tmp_path: Path,
) -> None:
    """Issue 5's note: a refused APPEND's blob was never freed. The refused entry stays
    listed, but its message lives in Recovered, which alone keeps the blob."""
    store, account, a, _ = _setup(tmp_path)
    try:
        recovered = store.write(
            lambda tx: mailboxes.create(tx, account, "Recovered", extra={"local": True})
        )

        def queue(tx: Tx) -> outbox.Entry:
            cache.put(tx, account, BlobId(20), Kind.FULL, b"draft")  # type: ignore[arg-type]
            return outbox.add(tx, account, "append", {"mailbox": int(a.id), "blob": 20})

        entry = store.write(queue)

        def refuse(tx: Tx) -> None:
            # What the runner does: the draft goes to Recovered, the entry is kept refused.
            message = Message(UID(1), None, (), "01-Jan-2026 00:00:00 +0000", 5, 1, BlobId(20))
            messages.put(tx, account, recovered.id, message)  # type: ignore[arg-type]
            outbox.set_refused(tx, entry, outbox.REFUSED, "over quota")

        store.write(refuse)
        assert _present(store, account, 20)
        assert len(store.read(lambda tx: outbox.refused(tx, account))) == 1  # type: ignore[arg-type]
        _remove(store, account, recovered, 1)
        assert not _present(store, account, 20)
        assert len(store.read(lambda tx: outbox.refused(tx, account))) == 1  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_failed_entry_keeps_its_content(tmp_path: Path) -> None:
    """Failed on the proxy (a bug): never re-sent blindly, but someone may act on it."""
    store, account, a, _ = _setup(tmp_path)
    try:
        store.write(lambda tx: _add(tx, account, a, 1, 30))
        entry = store.write(
            lambda tx: outbox.add(tx, account, "append", {"mailbox": int(a.id), "blob": 30})
        )
        store.write(lambda tx: outbox.set_refused(tx, entry, outbox.FAILED, "bug"))
        _remove(store, account, a, 1)
        assert _present(store, account, 30)
    finally:
        store.close()


def test_deleting_a_mailbox_frees_its_content(tmp_path: Path) -> None:
    store, account, a, b = _setup(tmp_path)
    try:

        def seed(tx: Tx) -> None:
            _add(tx, account, a, 1, 40)
            _add(tx, account, a, 2, 41)
            _add(tx, account, b, 1, 41)

        store.write(seed)
        store.write(lambda tx: mailboxes.delete(tx, a))
        assert not _anything(store, account, 40)
        assert _present(store, account, 41)
        assert store.read(lambda tx: messages.blob_users(tx, account, BlobId(40))) == []  # type: ignore[arg-type]
    finally:
        store.close()


def test_a_version_1_store_is_indexed_when_opened(tmp_path: Path) -> None:
    store, account, a, b = _setup(tmp_path)
    store.write(lambda tx: _add(tx, account, a, 1, 50))
    store.write(lambda tx: _add(tx, account, b, 1, 50))

    def downgrade(tx: Tx) -> None:
        for db in (b"blob_refs", b"usage", b"lru"):
            tx.txn.drop(tx.dbs[db], delete=False)
        tx.delete(b"meta", b"cache_bytes:" + account.to_bytes(4, "big"))
        tx.put(b"meta", b"schema_version", b"1")

    store.write(downgrade)
    store.close()
    store = Store(tmp_path / "replica")
    try:
        assert store.read(lambda tx: tx.get(b"meta", b"schema_version")) == b"2"
        users = store.read(lambda tx: messages.blob_users(tx, account, BlobId(50)))  # type: ignore[arg-type]
        assert users == [(a.id, 1, True), (b.id, 1, True)]
        assert store.read(lambda tx: usage.get(tx, account, BlobId(50))) == (5, 0)  # type: ignore[arg-type]
        assert store.read(lambda tx: usage.total(tx, account)) == 5  # type: ignore[arg-type]
    finally:
        store.close()
