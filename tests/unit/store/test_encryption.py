"""Encryption at rest in the store: sealed values, wrappings, locked accounts, conversion.

Every refusal is provoked with input made wrong on purpose: a wrong secret, a changed
byte, a value moved to another key, a record edited on disk, a locked account.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapproxy.store import (
    RecordTampered,
    Store,
    StoreLocked,
    Tx,
    account_keys,
    accounts,
    cache,
    key_drop,
    key_wrapping,
    mailboxes,
    messages,
    outbox,
    subscriptions,
)
from imapproxy.store.cache import Kind
from imapproxy.store.compact import compact
from imapproxy.store.keyring import AccountKey, sealed_account
from imapproxy.store.messages import Message
from imapproxy.store.verifier import ScryptParams
from imapproxy.types import UID, AccountId, BlobId, UpstreamUID

CHEAP = ScryptParams(2**10, 8, 1)
MARKER = b"Subject: zebra-marker-7731"
USER = b"user1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "replica")
    yield s
    s.close()


def _account(store: Store) -> accounts.Account:
    return store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "user1"))


def _fill(store: Store, account: accounts.Account) -> None:
    def fill(tx: Tx) -> None:
        mailboxes.create(tx, account.id, "Secret folder")
        cache.put(tx, account.id, BlobId(1), Kind.FULL, MARKER + b"\r\n\r\nbody zebra\r\n")
        subscriptions.note(tx, account.id, "Gone zebra folder", True)
        entry = outbox.add(tx, account.id, "create", {"name": "zebra"})
        outbox.set_refused(tx, entry, outbox.REFUSED, "no")
        outbox.add(tx, account.id, "create", {"name": "zebra2"})

    store.write(fill)


def _encrypt(store: Store, account: accounts.Account, secret: bytes = b"pw") -> AccountKey:
    key = AccountKey.new()
    wrapping = key_wrapping.wrap(
        key.data_key, key_wrapping.PASSWORD, USER, account.id, secret, params=CHEAP
    )
    field = {"wrappings": [wrapping], **key_drop.new_pair(key, account.id)}
    store.write(lambda tx: account_keys.encrypt_in_place(tx, account, key, field))
    return key


def _raw_values(path: Path) -> bytes:
    return (path / "data.mdb").read_bytes()


def test_a_value_opens_only_under_its_own_key_and_record() -> None:
    key = AccountKey.new()
    sealed = key.seal(b"cache", b"\0\0\0\1abc", b"secret text")
    assert b"secret text" not in sealed
    assert key.open(b"cache", b"\0\0\0\1abc", sealed) == b"secret text"
    with pytest.raises(RecordTampered):
        key.open(b"cache", b"\0\0\0\1abd", sealed)  # moved to another key
    with pytest.raises(RecordTampered):
        key.open(b"messages", b"\0\0\0\1abc", sealed)  # moved to another database
    with pytest.raises(RecordTampered):
        AccountKey.new().open(b"cache", b"\0\0\0\1abc", sealed)  # another account's key
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(RecordTampered):
        key.open(b"cache", b"\0\0\0\1abc", bytes(flipped))
    with pytest.raises(RecordTampered):
        key.open(b"cache", b"\0\0\0\1abc", b"{}")  # clear JSON is not taken as sealed


def test_which_records_are_sealed() -> None:
    assert sealed_account(b"messages", b"\0\0\0\7" + b"\0" * 8) == 7
    assert sealed_account(b"meta", b"subscribed_only:\0\0\0\7") == 7
    assert sealed_account(b"meta", b"cache_bytes:\0\0\0\7") is None
    assert sealed_account(b"accounts", b"\0\0\0\7") is None
    assert sealed_account(b"usage", b"\0\0\0\7") is None


def test_a_wrapping_opens_only_with_its_secret_kind_and_account() -> None:
    key = AccountKey.new()
    now = time.time()
    w = key_wrapping.wrap(key.data_key, "password", USER, 3, b"right", params=CHEAP)
    assert key_wrapping.unwrap(w, USER, 3, b"right", now) == key.data_key
    assert key_wrapping.unwrap(w, USER, 3, b"wrong", now) is None
    assert key_wrapping.unwrap(w, b"user2", 3, b"right", now) is None
    assert key_wrapping.unwrap(w, USER, 4, b"right", now) is None  # copied to account 4
    assert key_wrapping.unwrap({**w, "kind": "local"}, USER, 3, b"right", now) is None
    assert key_wrapping.unwrap({**w, "wrapped": "00" * 48}, USER, 3, b"right", now) is None
    assert key_wrapping.unwrap({**w, "scrypt": [2**40, 8, 1]}, USER, 3, b"right", now) is None
    assert key_wrapping.unwrap({**w, "extra": 1}, USER, 3, b"right", now) is None
    assert key_wrapping.unwrap("garbage", USER, 3, b"right", now) is None
    assert key_wrapping.problem({**w, "salt": "zz"}, now) is not None


def test_a_token_wrapping_expires_and_its_expiry_cannot_be_edited() -> None:
    key = AccountKey.new()
    now = time.time()
    expires = int(now) + 60
    w = key_wrapping.wrap(key.data_key, "token", USER, 3, b"tok", expires, CHEAP)
    assert key_wrapping.unwrap(w, USER, 3, b"tok", now) == key.data_key
    assert key_wrapping.unwrap(w, USER, 3, b"tok", now + 120) is None
    assert key_wrapping.unwrap({**w, "expires": expires + 3600}, USER, 3, b"tok", now) is None


def test_an_encrypted_account_holds_no_clear_content(store: Store, tmp_path: Path) -> None:
    account = _account(store)
    _fill(store, account)
    assert b"zebra" in _raw_values(tmp_path / "replica")  # the control
    _encrypt(store, account)
    store.close()
    # Freed pages may still hold old bytes until reused: compaction writes live pages only.
    compact(tmp_path / "replica")
    assert b"zebra" not in _raw_values(tmp_path / "replica")
    assert b"Secret folder" not in _raw_values(tmp_path / "replica")


def test_the_unlocked_key_reads_everything_back(store: Store) -> None:
    account = _account(store)
    _fill(store, account)
    _encrypt(store, account)
    assert store.keyring.is_encrypted(account.id) and not store.keyring.is_locked(account.id)
    assert store.read(lambda tx: mailboxes.find(tx, account.id, "Secret folder")) is not None
    body = store.read(lambda tx: cache.get(tx, account.id, BlobId(1), Kind.FULL))
    assert body is not None and body.startswith(MARKER)
    assert store.read(lambda tx: subscriptions.orphans(tx, account.id)) == {"Gone zebra folder"}
    assert len(store.read(lambda tx: outbox.refused(tx, account.id))) == 1
    assert store.read(lambda tx: outbox.refused_seqs(tx, account.id)) != []


def test_a_locked_account_raises_instead_of_answering(store: Store, tmp_path: Path) -> None:
    account = _account(store)
    _fill(store, account)
    _encrypt(store, account)
    store.close()
    reopened = Store(tmp_path / "replica")
    try:
        assert reopened.keyring.is_locked(account.id)
        with pytest.raises(StoreLocked):
            reopened.read(lambda tx: mailboxes.all_mailboxes(tx, account.id))
        with pytest.raises(StoreLocked):
            reopened.read(lambda tx: cache.get(tx, account.id, BlobId(1), Kind.FULL))
        with pytest.raises(StoreLocked):  # never writes plaintext either
            reopened.write(lambda tx: mailboxes.create(tx, account.id, "New"))
        # What status needs stays readable.
        assert reopened.read(lambda tx: outbox.refused_seqs(tx, account.id)) != []
        # Another (clear) account is not affected.
        other = reopened.write(lambda tx: accounts.ensure_account(tx, "imap://x", "user2"))
        reopened.write(lambda tx: mailboxes.create(tx, other.id, "Fine"))
    finally:
        reopened.close()


def test_a_tampered_or_moved_value_raises(store: Store, tmp_path: Path) -> None:
    account = _account(store)
    _fill(store, account)
    key = _encrypt(store, account)
    boxes = store.read(lambda tx: mailboxes.all_mailboxes(tx, account.id))
    assert boxes
    env = store._env.env  # the raw file, as someone with the disk would change it
    db = store._env.dbs[b"cache"]
    with env.begin(write=True, db=db) as txn:
        k, v = next(iter(txn.cursor()))
        flipped = bytearray(v)
        flipped[20] ^= 1
        txn.put(k, bytes(flipped))
    with pytest.raises(RecordTampered):
        store.read(lambda tx: cache.get(tx, account.id, BlobId(1), Kind.FULL))
    # A valid sealed value moved to another key of the same account.
    with env.begin(write=True, db=db) as txn:
        txn.put(k[:-1] + Kind.HEADER.value, key.seal(b"cache", k, b"x"))
    with pytest.raises(RecordTampered):
        store.read(lambda tx: cache.get(tx, account.id, BlobId(1), Kind.HEADER))


def test_an_edited_account_record_does_not_unlock(store: Store) -> None:
    account = _account(store)
    _encrypt(store, account, b"right")
    field = store.read(lambda tx: account_keys.record(tx, account))
    assert field is not None
    now = time.time()
    [w] = field["wrappings"]
    assert key_wrapping.unwrap(w, USER, account.id, b"right", now) is not None
    assert key_wrapping.unwrap(w, USER, account.id, b"wrong", now) is None


def test_a_pending_local_password_becomes_a_wrapping(store: Store) -> None:
    account = _account(store)
    key = _encrypt(store, account)
    field = store.read(lambda tx: account_keys.record(tx, account))
    assert field is not None
    pending = key_drop.seal_local(field, account.id, USER, b"local-pass", CHEAP)
    assert "local-pass" not in str(pending)
    wrapping = key_drop.open_local({**field, "pending_local": pending}, key, account.id)
    assert wrapping is not None
    now = time.time()
    assert key_wrapping.unwrap(wrapping, USER, account.id, b"local-pass", now) == key.data_key
    assert key_wrapping.unwrap(wrapping, USER, account.id, b"other", now) is None
    # Another account's key cannot open it; a changed byte cannot either.
    assert key_drop.open_local({**field, "pending_local": pending}, AccountKey.new(), 1) is None
    bad = {**pending, "sealed": "00" + pending["sealed"][2:]}
    assert key_drop.open_local({**field, "pending_local": bad}, key, account.id) is None


def test_twins_are_keyed_for_an_encrypted_account(store: Store) -> None:
    from imapproxy.store import twins

    account = _account(store)
    _fill(store, account)
    header = MARKER + b"\r\n\r\n"
    size = len(MARKER + b"\r\n\r\nbody zebra\r\n")
    clear = store.read(lambda tx: list(twins.candidates(tx, account.id, size, header)))
    assert clear == [1]
    _encrypt(store, account)
    found = store.read(lambda tx: list(twins.candidates(tx, account.id, size, header)))
    assert found == [1]
    keys = store.read(lambda tx: list(tx.keys(b"twins", account.id.to_bytes(4, "big"))))
    assert all(twins.header_hash(header) not in k for k in keys)


def test_eviction_and_freeing_work_on_sealed_bodies(store: Store) -> None:
    from imapproxy.store import usage

    account = _account(store)
    _encrypt(store, account)
    aid = AccountId(account.id)
    for blob in range(1, 6):
        store.write(lambda tx, b=blob: cache.put(tx, aid, BlobId(b), Kind.FULL, b"x" * 1000))
    store.set_cache_limit(aid, 2500)
    assert store.enforce_limit(aid) > 0
    assert store.read(lambda tx: usage.total(tx, aid)) <= 2500
    store.write(lambda tx: cache.drop_all(tx, aid, BlobId(5)))
    assert store.read(lambda tx: cache.get(tx, aid, BlobId(5), Kind.FULL)) is None


def test_only_the_accounts_own_key_fits(store: Store) -> None:
    account = _account(store)
    key = _encrypt(store, account)
    assert store.read(lambda tx: account_keys.key_fits(tx, account, key))
    assert not store.read(lambda tx: account_keys.key_fits(tx, account, AccountKey.new()))
    store.write(
        lambda tx: tx.txn.delete(b"key_check:" + account.id.to_bytes(4, "big"), db=tx.dbs[b"meta"])
    )
    assert not store.read(lambda tx: account_keys.key_fits(tx, account, key))


def test_the_getter_for_many_records_seals_as_get_does(store: Store, tmp_path: Path) -> None:
    """``cache.getter`` and ``messages.get_many`` decide sealing once per call (the
    header FETCH path): they open what ``get`` opens, and refuse what it refuses."""
    account = _account(store)
    _fill(store, account)
    clear = store.write(lambda tx: accounts.ensure_account(tx, "imap://x", "user2"))
    store.write(lambda tx: cache.put(tx, clear.id, BlobId(1), Kind.FULL, b"clear body"))
    _encrypt(store, account)
    read = store.read(lambda tx: cache.getter(tx, account.id, Kind.FULL)(BlobId(1)))
    assert read is not None and read.startswith(MARKER)
    assert store.read(lambda tx: cache.getter(tx, account.id, Kind.FULL)(BlobId(9))) is None
    assert store.read(lambda tx: cache.getter(tx, clear.id, Kind.FULL)(BlobId(1))) == b"clear body"
    box = store.write(lambda tx: mailboxes.create(tx, account.id, "INBOX"))
    message = Message(UID(1), None, ("\\Seen",), "01-Jan-2020 10:00:00 +0000", 5, 1, BlobId(1))
    store.write(lambda tx: messages.put(tx, account.id, box.id, message))
    assert store.read(lambda tx: messages.get_many(tx, account.id, box.id, [UID(1)])) == [message]
    env, db = store._env.env, store._env.dbs[b"cache"]
    key = cache._key(account.id, BlobId(1), Kind.FULL, "")
    with env.begin(write=True, db=db) as txn:
        sealed = bytearray(txn.get(key))
        sealed[20] ^= 1
        txn.put(key, bytes(sealed))
    with pytest.raises(RecordTampered):
        store.read(lambda tx: cache.getter(tx, account.id, Kind.FULL)(BlobId(1)))
    store.close()
    reopened = Store(tmp_path / "replica")
    try:
        with pytest.raises(StoreLocked):
            reopened.read(lambda tx: cache.getter(tx, account.id, Kind.FULL)(BlobId(1)))
        with pytest.raises(StoreLocked):
            reopened.read(lambda tx: messages.get_many(tx, account.id, box.id, [UID(1)]))
    finally:
        reopened.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_the_writers_for_many_records_write_as_put_does(
    store: Store, tmp_path: Path, encrypted: bool
) -> None:
    """A first sync's writers (messages.putter, cache.putter) decide sealing once: what
    they write reads back as put's does, and an encrypted account's stays sealed."""
    account = _account(store)
    if encrypted:
        _encrypt(store, account)
    box = store.write(lambda tx: mailboxes.create(tx, account.id, "INBOX"))
    message = Message(
        UID(3), UpstreamUID(7), ("\\Seen",), "01-Jan-2020 10:00:00 +0000", 5, 1, BlobId(4)
    )
    envelope = b'("zebra-envelope-4411")'

    def write(tx: Tx) -> None:
        messages.putter(tx, account.id, box.id)(message)
        cache.putter(tx, account.id, Kind.ENVELOPE)(BlobId(4), envelope)

    store.write(write)
    assert store.read(lambda tx: messages.get(tx, account.id, box.id, UID(3))) == message
    assert store.read(lambda tx: messages.upstream_map(tx, account.id, box.id)) == {7: UID(3)}
    assert store.read(lambda tx: messages.blob_users(tx, account.id, BlobId(4))) == [
        (box.id, UID(3), True)
    ]
    assert store.read(lambda tx: cache.get(tx, account.id, BlobId(4), Kind.ENVELOPE)) == envelope
    assert (b"zebra-envelope-4411" in _raw_values(tmp_path / "replica")) is not encrypted
