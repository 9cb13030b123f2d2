"""What an account's cached bodies cost, when each was last read, and the account's limit.

Only bodies count (the full message and body sections, cache.BODY_KINDS): they are
what fills a disk, and what can be fetched again. Metadata (ENVELOPE, BODYSTRUCTURE,
BODY, the header block) is small and always kept, so that a header sync works offline.

=========  =====================================  ==========================================
database   key                                    value
=========  =====================================  ==========================================
usage      account(4) blob(8)                     [bytes of body content, stamp]
lru        account(4) stamp(8) blob(8)            empty: the eviction order, oldest first
meta       ``cache_bytes:`` account(4)            u64: bytes of body content, all blobs
meta       ``cache_limit:`` account(4)            u64: the configured limit (absent: none)
=========  =====================================  ==========================================

A stamp orders bodies for least-recently-read eviction. A body a client read (or that
was fetched for a client, or written by one, as an APPEND) has the time of its last
read in milliseconds since the epoch. A body fetched ahead of time by prefetch and not
read since has ``prefetch_stamp``: its INTERNALDATE in *seconds*, which is below
every read stamp, so prefetched bodies nobody opened go first (oldest mail first),
and a read never loses its place to prefetched mail. Reading such a body gives it a
read stamp. Stamps only ever grow.

The limit is kept in the store, not only in the configuration, so that `imapproxy
prefetch` (which reads no configuration) respects the limit the serving proxy was given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from imapproxy.store._tx import Tx, read_u64, u32, u64
from imapproxy.types import AccountId, BlobId

#: Eviction goes down to this share of the limit, so it runs once per few reads rather
#: than on every one; prefetch fills only up to it, so it never pushes reads out.
LOW_WATER = 0.95


def now_stamp() -> int:
    return int(time.time() * 1000)


def prefetch_stamp(received: float) -> int:
    """The stamp of a prefetched, unread body received at ``received`` (epoch seconds)."""
    return max(0, min(int(received), int(time.time())))


def _key(account: AccountId, blob: BlobId) -> bytes:
    return u32(account) + u64(blob)


def _order_key(account: AccountId, stamp: int, blob: BlobId) -> bytes:
    return u32(account) + u64(stamp) + u64(blob)


def _total_key(account: AccountId) -> bytes:
    return b"cache_bytes:" + u32(account)


def _limit_key(account: AccountId) -> bytes:
    return b"cache_limit:" + u32(account)


def total(tx: Tx, account: AccountId) -> int:
    raw = tx.get(b"meta", _total_key(account))
    return 0 if raw is None else read_u64(raw)


def _add_total(tx: Tx, account: AccountId, delta: int) -> None:
    tx.put(b"meta", _total_key(account), u64(max(0, total(tx, account) + delta)))


def get(tx: Tx, account: AccountId, blob: BlobId) -> tuple[int, int] | None:
    """(bytes, stamp) of blob's cached body content, or None when none is cached."""
    record = tx.get_record(b"usage", _key(account, blob))
    return None if record is None else (int(record[0]), int(record[1]))


def added(tx: Tx, account: AccountId, blob: BlobId, size: int, stamp: int | None = None) -> None:
    """size bytes of blob's body content were put in the cache."""
    stamp = now_stamp() if stamp is None else stamp
    current = get(tx, account, blob)
    if current is not None:
        old_size, old_stamp = current
        if stamp <= old_stamp:
            stamp = old_stamp
        else:
            tx.delete(b"lru", _order_key(account, old_stamp, blob))
        size += old_size
    tx.put_record(b"usage", _key(account, blob), [size, stamp])
    tx.put(b"lru", _order_key(account, stamp, blob), b"")
    _add_total(tx, account, size - (current[0] if current else 0))


def shrunk(tx: Tx, account: AccountId, blob: BlobId, size: int) -> None:
    """size bytes of blob's body content left the cache (an overwritten section)."""
    current = get(tx, account, blob)
    if current is None:
        return
    left = max(0, current[0] - size)
    tx.put_record(b"usage", _key(account, blob), [left, current[1]])
    _add_total(tx, account, left - current[0])


def forget(tx: Tx, account: AccountId, blob: BlobId) -> int:
    """All of blob's body content left the cache; returns the bytes it had."""
    current = get(tx, account, blob)
    if current is None:
        return 0
    size, stamp = current
    tx.delete(b"usage", _key(account, blob))
    tx.delete(b"lru", _order_key(account, stamp, blob))
    _add_total(tx, account, -size)
    return size


def touch(tx: Tx, account: AccountId, blob: BlobId, stamp: int) -> None:
    """blob was read at stamp; nothing happens if its body is no longer cached."""
    current = get(tx, account, blob)
    if current is None or current[1] >= stamp:
        return
    size, old = current
    tx.delete(b"lru", _order_key(account, old, blob))
    tx.put_record(b"usage", _key(account, blob), [size, stamp])
    tx.put(b"lru", _order_key(account, stamp, blob), b"")


def oldest(tx: Tx, account: AccountId) -> Iterator[tuple[int, BlobId]]:
    """(stamp, blob) of every cached body, least recently read first."""
    for key in tx.keys(b"lru", u32(account)):
        yield read_u64(key, 4), BlobId(read_u64(key, 12))


def get_limit(tx: Tx, account: AccountId) -> int | None:
    raw = tx.get(b"meta", _limit_key(account))
    return None if raw is None else read_u64(raw)


def set_limit(tx: Tx, account: AccountId, limit: int | None) -> None:
    if limit is None:
        tx.delete(b"meta", _limit_key(account))
    elif get_limit(tx, account) != limit:
        tx.put(b"meta", _limit_key(account), u64(limit))


def low_water(limit: int) -> int:
    return int(limit * LOW_WATER)


def room(tx: Tx, account: AccountId) -> int | None:
    """Bytes of bodies that may still be added without eviction (prefetch's share), or
    None when the account has no limit."""
    limit = get_limit(tx, account)
    if limit is None:
        return None
    return max(0, low_water(limit) - total(tx, account))


def rebuild(tx: Tx, body_kinds: frozenset[bytes]) -> int:
    """Count every cached body of every account (a store written before this module
    existed); their last reads are unknown, so they get stamp 0 and go first. Returns
    the bytes counted."""
    sizes: dict[tuple[int, int], int] = {}
    cursor = tx.txn.cursor(db=tx.dbs[b"cache"])
    for raw_key, value in cursor.iternext(keys=True, values=True):
        key = bytes(raw_key)
        if len(key) >= 13 and key[12:13] in body_kinds:
            account_blob = (int.from_bytes(key[:4]), int.from_bytes(key[4:12]))
            sizes[account_blob] = sizes.get(account_blob, 0) + len(value)
    counted = 0
    for (account, blob), size in sizes.items():
        added(tx, AccountId(account), BlobId(blob), size, stamp=0)
        counted += size
    return counted
