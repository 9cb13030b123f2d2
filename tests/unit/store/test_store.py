"""The store: schema, key ranges per account, map growth, outbox ordering."""

from dataclasses import replace
from pathlib import Path

import pytest

from imapproxy.store import SchemaError, Store, accounts, cache, mailboxes, messages, outbox
from imapproxy.store.messages import Message
from imapproxy.types import UID, BlobId, UpstreamUID


def test_state_directory_is_private(tmp_path: Path) -> None:
    Store(tmp_path / "replica").close()
    assert (tmp_path / "replica").stat().st_mode & 0o777 == 0o700


def test_schema_version_mismatch_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(lambda tx: tx.put(b"meta", b"schema_version", b"999"))
    store.close()
    with pytest.raises(SchemaError, match="999"):
        Store(tmp_path)


def test_accounts_are_separate_key_ranges(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "alice"))
    b = store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "bob"))
    assert a.id != b.id
    assert store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "alice")) == a
    store.write(lambda tx: mailboxes.create(tx, a.id, "INBOX"))
    assert [m.name for m in store.read(lambda tx: mailboxes.all_mailboxes(tx, a.id))] == ["INBOX"]
    assert store.read(lambda tx: mailboxes.all_mailboxes(tx, b.id)) == []


def test_verifier_checks_password() -> None:
    verifier = accounts.make_verifier(b"secret")
    assert accounts.verifier_matches(verifier, b"secret")
    assert not accounts.verifier_matches(verifier, b"Secret")
    assert not accounts.verifier_matches(None, b"secret")
    assert "secret" not in repr(verifier)


def test_uidvalidity_strictly_increases(tmp_path: Path) -> None:
    store = Store(tmp_path)
    values = [store.write(mailboxes.new_uidvalidity) for _ in range(5)]
    assert values == sorted(set(values))


def test_messages_and_upstream_map(tmp_path: Path) -> None:
    store = Store(tmp_path)
    box = store.write(lambda tx: mailboxes.create(tx, 1, "INBOX"))

    def fill(tx):
        for uid in range(1, 6):
            msg = Message(UID(uid), UpstreamUID(uid * 10), ("\\Seen",), "d", 100, 1, BlobId(uid))
            messages.put(tx, 1, box.id, msg)

    store.write(fill)
    assert store.read(lambda tx: messages.uids(tx, 1, box.id)) == [1, 2, 3, 4, 5]
    assert store.read(lambda tx: messages.local_uid(tx, 1, box.id, 30)) == 3
    msg = store.read(lambda tx: messages.get(tx, 1, box.id, UID(3)))
    store.write(lambda tx: messages.remove(tx, 1, box.id, msg))
    assert store.read(lambda tx: messages.local_uid(tx, 1, box.id, 30)) is None
    assert store.read(lambda tx: messages.uids(tx, 1, box.id)) == [1, 2, 4, 5]
    # Read from the keys alone, ascending; another mailbox's links are not among them.
    other = store.write(lambda tx: mailboxes.create(tx, 1, "Other"))
    far = Message(UID(1), UpstreamUID(2**32 - 1), (), "d", 1, 1, BlobId(9))
    store.write(lambda tx: messages.put(tx, 1, box.id, replace(far, uid=UID(6))))
    store.write(
        lambda tx: messages.put(tx, 1, other.id, replace(far, upstream_uid=UpstreamUID(15)))
    )
    assert store.read(lambda tx: messages.upstream_uids(tx, 1, box.id)) == [
        10,
        20,
        40,
        50,
        2**32 - 1,
    ]


def test_map_grows_instead_of_failing(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=1 << 20)
    big = b"x" * (600 * 1024)
    for blob in range(1, 6):
        store.write(lambda tx, blob=blob: cache.put(tx, 1, BlobId(blob), cache.Kind.FULL, big))
    assert store.read(lambda tx: cache.get(tx, 1, BlobId(5), cache.Kind.FULL)) == big


def test_outbox_keeps_order_per_account(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(lambda tx: outbox.add(tx, 1, "store", {"n": 1}))
    store.write(lambda tx: outbox.add(tx, 2, "store", {"n": 2}))
    store.write(lambda tx: outbox.add(tx, 1, "append", {"n": 3}))
    entries = store.read(lambda tx: outbox.pending(tx, 1))
    assert [e.args["n"] for e in entries] == [1, 3]
    store.write(lambda tx: outbox.remove(tx, entries[0]))
    store.close()
    reopened = Store(tmp_path)
    assert [e.args["n"] for e in reopened.read(lambda tx: outbox.pending(tx, 1))] == [3]


@pytest.mark.parametrize(
    "message",
    [
        Message(
            UID(5),
            UpstreamUID(12345),
            ("\\Seen", "$Label1"),
            "01-Jan-2023 +0000",
            16834,
            7,
            BlobId(9),
        ),
        Message(UID(6), None, (), "01-Jan-2023 09:00:45 +0000", 0, 1, BlobId(1)),
        Message(UID(7), UpstreamUID(2**32 - 1), ("Grüße",), "x", 2**40, 2**60, BlobId(3)),
        Message(UID(8), UpstreamUID(1), ("a b", ""), "x", 1, 1, BlobId(3)),  # kept as JSON
        Message(UID(9), UpstreamUID(1), (), "x" * 70000, -1, 2**70, BlobId(3)),  # JSON too
    ],
)
def test_a_message_record_reads_back_as_written(tmp_path: Path, message: Message) -> None:
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    store.write(lambda tx: messages.put(tx, account, box.id, message))
    assert store.read(lambda tx: messages.get(tx, account, box.id, message.uid)) == message
    # What STATUS counts, read without building the Message, says the same.
    tally = store.read(lambda tx: messages.flag_tally(tx, account, box.id))
    flags = tuple(flag.encode() for flag in message.flags)
    assert (tally.messages, tally.size, tally.by_flags) == (1, message.size, {flags: (1, 1)})
    store.close()


def test_a_message_record_written_as_json_still_reads(tmp_path: Path) -> None:
    """Replicas written before the compact record keep working."""
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    key = messages.prefix(account, box.id) + (3).to_bytes(4, "big")
    old = b'[12,["\\\\Seen"],"01-Jan-2023 09:00:45 +0000",5,6,7]'
    store.write(lambda tx: tx.put(b"messages", key, old))
    found = store.read(lambda tx: messages.get(tx, account, box.id, UID(3)))
    assert found == Message(
        UID(3), UpstreamUID(12), ("\\Seen",), "01-Jan-2023 09:00:45 +0000", 5, 6, BlobId(7)
    )
    store.close()


class _CountingEnv:
    """An LMDB environment that counts explicit disk syncs."""

    def __init__(self, env: object) -> None:
        self.env = env
        self.syncs = 0

    def sync(self, force: bool = False) -> None:
        self.syncs += 1
        self.env.sync(force)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.env, name)


def test_a_write_is_synced_to_disk_unless_it_is_content_fetched_again(tmp_path: Path) -> None:
    """LMDB syncs only the data pages at commit (MDB_NOMETASYNC); a durable write syncs
    again for the meta page before it returns, a write of fetched content does not."""
    store = Store(tmp_path / "replica")
    account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
    assert store._env.env.flags()["metasync"] is False
    counting = _CountingEnv(store._env.env)
    store._env.env = counting  # type: ignore[assignment]
    store.write(lambda tx: cache.put(tx, account, BlobId(1), cache.Kind.ENVELOPE, b"(NIL)"))
    assert counting.syncs == 1
    store.write(
        lambda tx: cache.put(tx, account, BlobId(2), cache.Kind.FULL, b"x\r\n\r\ny"), durable=False
    )
    assert counting.syncs == 1
    assert (
        store.read(lambda tx: cache.get(tx, account, BlobId(2), cache.Kind.FULL)) == b"x\r\n\r\ny"
    )
    store._env.env = counting.env  # type: ignore[assignment]
    store.close()
