"""A transaction handle that knows our named databases, and key/record encoding.

Keys are fixed-width big-endian integers so that LMDB's byte order is numeric order
and a mailbox's messages are one contiguous range; names never go into keys (LMDB's
key limit is 511 bytes). Records are compact JSON: small, readable with mdb_dump,
and stable across Python versions.

Every value goes through ``get``/``put``/``scan`` here, so this is where an encrypted
account's records are sealed and opened (keyring.py says which records and why). A
Tx without a keyring (``imapproxy status``) reads values as they are on disk.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import lmdb

from imapproxy.store.keyring import AccountKey, Keyring, sealed_account

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


def u32(n: int) -> bytes:
    return U32.pack(n)


def u64(n: int) -> bytes:
    return U64.pack(n)


def read_u32(b: bytes, offset: int = 0) -> int:
    return int(U32.unpack_from(b, offset)[0])


def read_u64(b: bytes, offset: int = 0) -> int:
    return int(U64.unpack_from(b, offset)[0])


def encode(record: Any) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> Any:
    return json.loads(data)


class Tx:
    """One LMDB transaction plus the named databases it may touch.

    ``maybe_unused`` collects (account, blob) pairs whose last message may have gone
    in this transaction; the store frees those no one uses any more before it commits
    (reclaim.free_pending), so expunged content never outlives its expunge.
    """

    def __init__(
        self, txn: lmdb.Transaction, dbs: dict[bytes, Any], keyring: Keyring | None = None
    ) -> None:
        self.txn = txn
        self.dbs = dbs
        self.maybe_unused: set[tuple[int, int]] = set()
        self.keyring = keyring
        #: Keys of accounts whose encryption this transaction turned on: they count here
        #: at once, and join the keyring only if it commits (Store.write).
        self.adopted: dict[int, AccountKey] = {}

    def key_of(self, account: int) -> AccountKey | None:
        """The account's key if it is encrypted (StoreLocked if not unlocked), else None."""
        if self.adopted:
            found = self.adopted.get(account)
            if found is not None:
                return found
        if self.keyring is None or not self.keyring.any:
            return None
        return self.keyring.key_of(account)

    def adopt_key(self, account: int, key: AccountKey) -> None:
        """From now on in this transaction (and, once committed, for good) the account's
        records are sealed with key."""
        self.adopted[account] = key

    def _sealing(self, db: bytes, key: bytes) -> AccountKey | None:
        if not self.adopted and (self.keyring is None or not self.keyring.any):
            return None
        account = sealed_account(db, key)
        return None if account is None else self.key_of(account)

    def get(self, db: bytes, key: bytes) -> bytes | None:
        value = self.txn.get(key, db=self.dbs[db])
        if value is None:
            return None
        sealing = self._sealing(db, key)
        return bytes(value) if sealing is None else sealing.open(db, key, value)

    def getter(self, db: bytes, account: int) -> Callable[[bytes], bytes | None]:
        """``get`` for many keys of one account's records in db (keys that start with
        its number, as every sealed record's does), with whether they are sealed decided
        once: a header FETCH of 10,000 messages reads 30,000 records, and asking per
        record was a fifth of its CPU."""
        assert db != b"meta"  # its sealed records are not keyed by account first
        get, handle = self.txn.get, self.dbs[db]
        sealing = self._sealing(db, U32.pack(account))
        if sealing is None:
            return lambda key: get(key, db=handle)  # type: ignore[return-value]

        def opened(key: bytes) -> bytes | None:
            value = get(key, db=handle)
            return None if value is None else sealing.open(db, key, value)

        return opened

    def putter(self, db: bytes, account: int) -> Callable[[bytes, bytes | bytearray], None]:
        """``put`` for many of one account's records in db, as ``getter`` reads them:
        a first sync writes five records a message."""
        assert db != b"meta"  # its sealed records are not keyed by account first
        put, handle = self.txn.put, self.dbs[db]
        sealing = self._sealing(db, U32.pack(account))
        if sealing is None:
            return lambda key, value: put(key, value, db=handle)  # type: ignore[return-value]

        def sealed(key: bytes, value: bytes | bytearray) -> None:
            put(key, sealing.seal(db, key, value), db=handle)

        return sealed

    def put(self, db: bytes, key: bytes, value: bytes | bytearray) -> None:
        sealing = self._sealing(db, key)
        if sealing is not None:
            value = sealing.seal(db, key, value)
        self.txn.put(key, value, db=self.dbs[db])

    def delete(self, db: bytes, key: bytes) -> bool:
        return bool(self.txn.delete(key, db=self.dbs[db]))

    def get_record(self, db: bytes, key: bytes) -> Any:
        value = self.get(db, key)
        return None if value is None else decode(value)

    def put_record(self, db: bytes, key: bytes, record: Any) -> None:
        self.put(db, key, encode(record))

    def scan(
        self, db: bytes, prefix: bytes, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with prefix, in key order, from start (a full key) on."""
        cursor = self.txn.cursor(db=self.dbs[db])
        if not cursor.set_range(start if start is not None else prefix):
            return
        if db != b"meta" and len(prefix) >= 4:
            # Every key here starts with the account's number, which alone decides
            # whether the record is sealed (see getter): decided once, not per record
            # (a STATUS of a 10,000-message mailbox scans all its records).
            sealing = self._sealing(db, prefix)
            for raw_key, value in cursor:
                key = bytes(raw_key)  # a memoryview in a transaction with buffers
                if not key.startswith(prefix):
                    return
                yield key, bytes(value) if sealing is None else sealing.open(db, key, value)
            return
        for raw_key, value in cursor:
            key = bytes(raw_key)
            if not key.startswith(prefix):
                return
            sealing = self._sealing(db, key)
            yield key, bytes(value) if sealing is None else sealing.open(db, key, value)

    def has(self, db: bytes, key: bytes) -> bool:
        """Whether key is there, without copying its value (bodies can be megabytes)."""
        cursor = self.txn.cursor(db=self.dbs[db])
        return bool(cursor.set_key(key))

    def keys(self, db: bytes, prefix: bytes) -> Iterator[bytes]:
        """Keys that start with prefix, in order, without copying values."""
        cursor = self.txn.cursor(db=self.dbs[db])
        if not cursor.set_range(prefix):
            return
        for raw_key in cursor.iternext(keys=True, values=False):
            key = bytes(raw_key)
            if not key.startswith(prefix):
                return
            yield key

    def delete_prefix(self, db: bytes, prefix: bytes) -> int:
        keys = list(self.keys(db, prefix))
        for key in keys:
            self.delete(db, key)
        return len(keys)

    def counter(self, name: bytes, start: int = 1, count: int = 1) -> int:
        """Next value of a persistent counter in the meta database; with count, the
        first of that many consecutive values, all taken."""
        key = b"counter:" + name
        raw = self.get(b"meta", key)
        value = start if raw is None else read_u64(raw)
        self.put(b"meta", key, u64(value + count))
        return value
