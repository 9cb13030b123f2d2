"""Cached message content, keyed by blob: what was once downloaded is not fetched again
(unless the account's cache limit evicted it: see usage.py and eviction.py).

Key: account(4) blob(8) kind(1) [section hash(8)]. Kinds: ENVELOPE and
BODYSTRUCTURE as the upstream serialized them (served verbatim), the header block,
the full message, and any other body section the upstream was asked for, by the
hash of its section text. Bodies (the full message and sections) are counted in
usage.py as they come and go, so the account's limit can be checked without a scan,
and full messages are indexed by size and header (twins.py) so that the same message
met again under another blob can take this one's body instead of a download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from enum import Enum

from imapproxy.store import gmail_ids, held, twins, usage
from imapproxy.store._tx import U64, Tx, u32, u64
from imapproxy.types import AccountId, BlobId


class Kind(bytes, Enum):
    ENVELOPE = b"E"
    BODYSTRUCTURE = b"S"
    BODY = b"B"
    HEADER = b"H"
    FULL = b"F"
    SECTION = b"X"


#: Content that counts against the cache limit and may be evicted; the other kinds are
#: metadata, always kept.
BODY_KINDS = frozenset({Kind.FULL, Kind.SECTION})
_BODY_BYTES = frozenset(k.value for k in BODY_KINDS)


def _key(account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> bytes:
    key = u32(account) + u64(blob) + kind.value
    if kind is Kind.SECTION:
        key += hashlib.sha256(section.encode()).digest()[:8]
    return key


def get(tx: Tx, account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> bytes | None:
    return tx.get(b"cache", _key(account, blob, kind, section))


def getter(tx: Tx, account: AccountId, kind: Kind) -> Callable[[BlobId], bytes | None]:
    """``get`` of one kind (not SECTION) for many blobs of an account in tx: the key's
    fixed parts made once, for a FETCH that reads the ENVELOPE of 100,000 messages."""
    assert kind is not Kind.SECTION
    head, tail, read = u32(account), kind.value, tx.getter(b"cache", account)
    pack = U64.pack
    return lambda blob: read(head + pack(blob) + tail)


def putter(tx: Tx, account: AccountId, kind: Kind) -> Callable[[BlobId, bytes], None]:
    """``put`` of one kind that is not a body (nothing to count against the limit, no
    twin to note) for many blobs: a first sync keeps two such items a message."""
    assert kind not in BODY_KINDS
    head, tail, write = u32(account), kind.value, tx.putter(b"cache", account)
    pack = U64.pack
    return lambda blob, data: write(head + pack(blob) + tail, data)


def has(tx: Tx, account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> bool:
    return tx.has(b"cache", _key(account, blob, kind, section))


def put(
    tx: Tx,
    account: AccountId,
    blob: BlobId,
    kind: Kind,
    data: bytes | bytearray,
    section: str = "",
    *,
    stamp: int | None = None,
) -> None:
    """Keep data; a body is counted against the account's limit with ``stamp`` (see
    usage.py; default: read now)."""
    key = _key(account, blob, kind, section)
    if kind in BODY_KINDS:
        old = tx.get(b"cache", key) if tx.has(b"cache", key) else None
        if old is not None:
            usage.shrunk(tx, account, blob, len(old))
        usage.added(tx, account, blob, len(data), stamp)
    tx.put(b"cache", key, data)
    if kind is Kind.FULL:
        header = twins.header_of(data)
        if header is None:
            twins.forget(tx, account, blob)
        else:
            twins.note(tx, account, blob, len(data), header)


def new_blob(tx: Tx, account: AccountId) -> BlobId:
    return BlobId(tx.counter(b"blob:" + u32(account)))


def new_blobs(tx: Tx, account: AccountId, count: int) -> Iterator[BlobId]:
    """count new blob ids, taken with one counter update (a first sync adds thousands)."""
    if count <= 0:
        return iter(())
    first = tx.counter(b"blob:" + u32(account), count=count)
    return (BlobId(blob) for blob in range(first, first + count))


def delete(tx: Tx, account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> None:
    key = _key(account, blob, kind, section)
    if kind in BODY_KINDS:
        old = tx.get(b"cache", key)
        if old is not None:
            usage.shrunk(tx, account, blob, len(old))
    if kind is Kind.FULL:
        twins.forget(tx, account, blob)
    tx.delete(b"cache", key)


def drop_bodies(tx: Tx, account: AccountId, blob: BlobId) -> int:
    """Remove blob's body content (full message, sections), keeping its metadata;
    returns the bytes it had."""
    head = u32(account) + u64(blob)
    keys = [key for key in tx.keys(b"cache", head) if key[12:13] in _BODY_BYTES]
    for key in keys:
        tx.delete(b"cache", key)
    twins.forget(tx, account, blob)
    return usage.forget(tx, account, blob)


def drop_all(tx: Tx, account: AccountId, blob: BlobId) -> bool:
    """Remove everything cached of blob (no message uses it any more); True if there was
    anything."""
    usage.forget(tx, account, blob)
    twins.forget(tx, account, blob)
    held.forget(tx, account, blob)
    gmail_ids.forget(tx, account, blob)
    return tx.delete_prefix(b"cache", u32(account) + u64(blob)) > 0
