"""An account's encryption record, and turning encryption on for an account in place.

The account record (accounts.py, in clear) carries ``encryption`` once the account is
encrypted: ``{"wrappings": [...], "public": hex, "private": hex, ["pending_local": {...}]}``.
The wrappings are key_wrapping.py's; ``public``/``private`` are the X25519 key pair of
key_drop.py (its private half sealed under the data key), through which `imapproxy
passwd` hands a new local password's key to the proxy without holding the data key.

An account with that field is encrypted for good: turning ``encrypt`` off later
changes nothing for it (its records could not be read otherwise).

``encrypt_in_place`` turns a clear account into an encrypted one in the caller's
write transaction: every sealed record of the account is rewritten sealed, the twins
index re-keyed, the refused outbox entries listed in clear, the record's field
written, all or nothing (a kill -9 midway leaves the clear account as it was).
"""

from __future__ import annotations

from typing import Any

from imapproxy.store import accounts, twins
from imapproxy.store import outbox as outbox_store
from imapproxy.store._tx import Tx, decode, read_u64, u32
from imapproxy.store.cache import Kind
from imapproxy.store.keyring import SEALED_DBS, SEALED_META_PREFIXES, AccountKey
from imapproxy.types import BlobId

FIELD = "encryption"
#: What ``key_check:`` account(4) holds, sealed under the account's key.
CHECK_TEXT = b"imapproxy key check"


def _check_key(account_id: int) -> bytes:
    return b"key_check:" + u32(account_id)


def key_fits(tx: Tx, account: accounts.Account, key: AccountKey) -> bool:
    """Whether key is the account's own: it opens the key check sealed when the
    encryption began. The wrappings are in the clear account record, where anyone who
    can write the state directory could add one of their own around a key they chose;
    without this check, logging in with it first would make the proxy seal new mail
    under that key. A missing or unreadable check never fits. Never raises."""
    try:
        raw = tx.txn.get(_check_key(account.id), db=tx.dbs[b"meta"])
        if raw is None:
            return False
        return key.open(b"meta", _check_key(account.id), bytes(raw)) == CHECK_TEXT
    except Exception:  # RecordTampered above all
        return False


def record(tx: Tx, account: accounts.Account) -> dict[str, Any] | None:
    """The encryption field as stored (None: a clear account). An unusable field
    (not a mapping) still counts as encrypted: it is never taken for a clear account."""
    found = accounts.get_field(tx, account, FIELD)
    if found is None:
        return None
    return found if isinstance(found, dict) else {"wrappings": []}


def wrappings(tx: Tx, account: accounts.Account) -> list[Any]:
    found = (record(tx, account) or {}).get("wrappings")
    return list(found) if isinstance(found, list) else []


def set_wrappings(tx: Tx, account: accounts.Account, new: list[Any]) -> None:
    current = dict(record(tx, account) or {})
    current["wrappings"] = new
    accounts.set_field(tx, account, FIELD, current)


def set_entry(tx: Tx, account: accounts.Account, name: str, value: object) -> None:
    """Set (or, with None, remove) one entry of the encryption field."""
    current = dict(record(tx, account) or {})
    if value is None:
        current.pop(name, None)
    else:
        current[name] = value
    accounts.set_field(tx, account, FIELD, current)


def encrypted_accounts(tx: Tx) -> set[int]:
    """Ids of every encrypted account (what the Store's keyring starts from)."""
    found = set()
    for _, value in tx.scan(b"accounts", b""):
        try:
            stored = decode(value)
        except ValueError:
            continue
        if isinstance(stored, dict) and stored.get(FIELD) is not None:
            found.add(int(stored["id"]))
    return found


def encrypt_in_place(
    tx: Tx, account: accounts.Account, key: AccountKey, field: dict[str, Any]
) -> int:
    """Seal every record of a clear account under key and store field (its wrappings
    and key pair); returns how many records were sealed. The account must be clear."""
    if record(tx, account) is not None:
        raise ValueError("the account is encrypted already")
    prefix = u32(account.id)
    # What the twins index needs, read while the bodies are still clear.
    full_bodies: list[tuple[BlobId, int, bytes]] = []
    for reverse in list(tx.keys(b"twin_of", prefix)):
        blob = BlobId(read_u64(reverse, 4))
        body = tx.get(b"cache", prefix + reverse[4:12] + Kind.FULL.value)
        header = None if body is None else twins.header_of(body)
        twins.forget(tx, account.id, blob)
        if body is not None and header is not None:
            full_bodies.append((blob, len(body), header))
    refused = [
        read_u64(k, 4)
        for k, value in tx.scan(b"outbox", prefix)
        for entry in [decode(value)]
        if isinstance(entry, dict)
        and entry.get("state", outbox_store.QUEUED) != outbox_store.QUEUED
    ]
    outbox_store.set_refused_seqs(tx, account.id, refused)
    sealed = 0
    meta_keys = [p + prefix for p in SEALED_META_PREFIXES]
    for db in sorted(SEALED_DBS):
        handle = tx.dbs[db]
        for k in list(tx.keys(db, prefix)):
            clear = tx.txn.get(k, db=handle)
            if clear is not None:
                tx.txn.put(k, key.seal(db, k, bytes(clear)), db=handle)
            sealed += 1
    for k in meta_keys:
        raw = tx.txn.get(k, db=tx.dbs[b"meta"])
        if raw is not None:
            tx.txn.put(k, key.seal(b"meta", k, bytes(raw)), db=tx.dbs[b"meta"])
            sealed += 1
    tx.adopt_key(account.id, key)
    tx.put(b"meta", _check_key(account.id), CHECK_TEXT)
    for blob, size, header in full_bodies:
        twins.note(tx, account.id, blob, size, header)
    accounts.set_field(tx, account, FIELD, field)
    return sealed
