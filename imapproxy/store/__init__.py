"""The LMDB replica: accounts, mailboxes, messages, cached content, change log, outbox.

Callers pass a function of one transaction to ``Store.read`` or ``Store.write`` and
use the domain modules (``mailboxes``, ``messages``, ``cache``, ``outbox``,
``accounts``) inside it, so that related changes (a flag change and the outbox entry
it answers) commit together. No transaction outlives the call. Content that a write
let go of (an expunged message's) is freed in that same transaction (reclaim.py).

Each account's cached bodies may be limited (``set_cache_limit``); ``note_reads``
records reads in memory and ``enforce_limit`` evicts the least recently read bodies
(usage.py, eviction.py). While a Store is open it holds a shared lock on the
replica, so `imapproxy compact` (compact.py) never swaps the file under it.

Encrypted accounts (keyring.py): the Store holds the keyring, which knows from the
account records which accounts are encrypted and keeps the keys unlocked so far for
the life of the process; every Tx seals and opens those accounts' records with it
and raises StoreLocked rather than touch a locked account's records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from imapproxy.store import accounts, cache, eviction, mailboxes, messages, outbox, reclaim, usage
from imapproxy.store._env import Environment
from imapproxy.store._tx import Tx
from imapproxy.store.account_keys import encrypted_accounts
from imapproxy.store.compact import StoreLock
from imapproxy.store.keyring import Keyring, RecordTampered, StoreLocked
from imapproxy.store.reads import ReadLog
from imapproxy.store.resident import ResidentPages
from imapproxy.store.schema import SchemaError, check_or_initialize
from imapproxy.types import AccountId, BlobId

T = TypeVar("T")

__all__ = [
    "RecordTampered",
    "SchemaError",
    "Store",
    "StoreLocked",
    "Tx",
    "accounts",
    "cache",
    "eviction",
    "mailboxes",
    "messages",
    "outbox",
    "reclaim",
    "usage",
]


class Store:
    def __init__(self, path: Path, map_size: int | None = None) -> None:
        self._lock = StoreLock.shared(path)
        #: Which accounts are encrypted, and the keys unlocked so far (keyring.py).
        self.keyring = Keyring()
        try:
            self._env = Environment(path) if map_size is None else Environment(path, map_size)
            #: The map's pages that transactions touched, released now and then.
            self.resident = ResidentPages(
                path / "data.mdb", generation=lambda: self._env.map_generation
            )
            self.write(check_or_initialize)
            for account in self.read(encrypted_accounts):
                self.keyring.note_encrypted(account)
        except BaseException:
            self._lock.release()
            raise
        self.reads = ReadLog()

    def read(self, body: Callable[[Tx], T]) -> T:
        result = self._env.read(lambda txn: body(Tx(txn, self._env.dbs, self.keyring)))
        self.resident.tick()
        return result

    def write(self, body: Callable[[Tx], T], durable: bool = True) -> T:
        """Run body in one write transaction. ``durable=False`` only for content the
        upstream can give again (_env.py: a power loss may take it back)."""

        def run(txn: object) -> tuple[T, Tx]:
            tx = Tx(txn, self._env.dbs, self.keyring)  # type: ignore[arg-type]
            result = body(tx)
            reclaim.free_pending(tx)
            return result, tx

        result, tx = self._env.write(run, durable)
        # Committed: accounts whose encryption the transaction turned on count from now.
        for account, key in tx.adopted.items():
            self.keyring.unlock(account, key)
        self.resident.tick()
        return result

    # -- the cache limit ---------------------------------------------------------------

    def set_cache_limit(self, account: AccountId, limit: int | None) -> None:
        self.write(lambda tx: usage.set_limit(tx, account, limit))

    def cache_room(self, account: AccountId) -> int | None:
        """Bytes of bodies prefetch may add without eviction; None: no limit."""
        return self.read(lambda tx: usage.room(tx, account))

    def note_reads(self, account: AccountId, blobs: Iterable[BlobId]) -> None:
        """Bodies a client just read (kept in memory; see reads.py)."""
        self.reads.note(account, blobs)

    def flush_reads(self) -> None:
        reads = self.reads.pending()
        if reads:
            self.write(lambda tx: self.reads.apply(tx, reads))
            self.reads.written(reads)

    def enforce_limit(self, account: AccountId) -> int:
        """Evict least recently read bodies of account until it is back under its low
        water mark, if it is over its limit; returns the bytes evicted. Pending reads are
        written first (in the same transaction) so the order is current."""

        def over(tx: Tx) -> bool:
            limit = usage.get_limit(tx, account)
            return limit is not None and usage.total(tx, account) > limit

        if not self.read(over):
            if self.reads.due():
                self.flush_reads()
            return 0
        evicted = 0
        while True:
            reads = self.reads.pending()

            def step(
                tx: Tx, reads: dict[tuple[AccountId, BlobId], int] = reads
            ) -> eviction.Evicted:
                self.reads.apply(tx, reads)
                limit = usage.get_limit(tx, account)
                if limit is None:
                    return eviction.Evicted()
                return eviction.evict(tx, account, usage.low_water(limit))

            done = self.write(step)
            self.reads.written(reads)
            evicted += done.bytes
            if not done.above or not done.blobs:
                return evicted

    def close(self) -> None:
        try:
            self.flush_reads()
        finally:
            self._env.close()
            self._lock.release()
