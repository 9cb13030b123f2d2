"""Which cached full bodies have which size and header: finding a message already held.

The same message can reach the replica under several blobs: another client copied or
moved it, or it was delivered to two folders. Its size and header block identify it
well enough to look for it (issue 6: same RFC822.SIZE, byte-identical header); this
index makes the look-up one key range instead of a scan, and the caller compares the
header bytes before trusting a hit (a hash is only a pointer, never the proof).

=========  =====================================  ==========================================
database   key                                    value
=========  =====================================  ==========================================
twins      account(4) size(8) hash(8) blob(8)     empty: blob's full body has this length
                                                  and its header block this hash
twin_of    account(4) blob(8)                     size(8) hash(8): the key above, to remove
=========  =====================================  ==========================================

Only blobs whose full message is cached are indexed (cache.py keeps the index as full
bodies come and go: put, delete, eviction, freeing): a twin without a body would save
nothing. The size is the body's length, so a look-up by a new message's RFC822.SIZE
finds only bodies of exactly that many bytes; an upstream whose RFC822.SIZE differs
from what it sends for ``BODY[]`` gets no twins, never a wrong one.

The index is a hint: a store written by an imapproxy that did not keep it (or an entry
that outlived its body) costs a missed twin, never a wrong answer, because the caller
reads the candidate's body and compares.

For an encrypted account the header hash is an HMAC under a key of that account
(keyring.py): the index then cannot confirm that a known message is cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from imapproxy.message import split_header
from imapproxy.store._tx import Tx, read_u64, u32, u64
from imapproxy.types import AccountId, BlobId

#: A full message's header block is looked for in its first this many bytes: a copy of at
#: most this much, never of the body (a 30 MB APPEND must not cost another 30 MB). A
#: longer header block goes unindexed: a missed twin, nothing worse.
HEADER_SCAN = 256 * 1024


def header_of(full: bytes | bytearray) -> bytes | None:
    """The header block of a full message, byte-exact as split_header cuts it; None when
    it does not end within HEADER_SCAN bytes."""
    head = bytes(full[:HEADER_SCAN])
    header = split_header(head)[0]
    if len(header) == len(head) and len(full) > len(head):
        return None  # no end of the header in sight (or a blank line cut in two)
    return header


def header_hash(header: bytes) -> bytes:
    return hashlib.sha256(header).digest()[:8]


def _digest(tx: Tx, account: AccountId, header: bytes) -> bytes:
    """The header's hash in keys: keyed for an encrypted account (keyring.py says why)."""
    key = tx.key_of(account)
    return header_hash(header) if key is None else key.twin_hash(header)


def _key(account: AccountId, size: int, digest: bytes, blob: BlobId) -> bytes:
    return u32(account) + u64(size) + digest + u64(blob)


def _reverse_key(account: AccountId, blob: BlobId) -> bytes:
    return u32(account) + u64(blob)


def note(tx: Tx, account: AccountId, blob: BlobId, size: int, header: bytes) -> None:
    """blob's full body (size bytes, this header block) is cached."""
    forget(tx, account, blob)
    digest = _digest(tx, account, header)
    tx.put(b"twins", _key(account, size, digest, blob), b"")
    tx.put(b"twin_of", _reverse_key(account, blob), u64(size) + digest)


def forget(tx: Tx, account: AccountId, blob: BlobId) -> None:
    """blob's full body left the cache (nothing happens if it was not indexed)."""
    reverse = _reverse_key(account, blob)
    value = tx.get(b"twin_of", reverse)
    if value is None:
        return
    tx.delete(b"twins", _key(account, read_u64(value), value[8:16], blob))
    tx.delete(b"twin_of", reverse)


def indexed(tx: Tx, account: AccountId, blob: BlobId) -> bool:
    return tx.has(b"twin_of", _reverse_key(account, blob))


def any_of_size(tx: Tx, account: AccountId, size: int) -> bool:
    """Whether some cached full body has exactly size bytes (before asking for a header)."""
    return next(tx.keys(b"twins", u32(account) + u64(size)), None) is not None


def candidates(tx: Tx, account: AccountId, size: int, header: bytes) -> Iterator[BlobId]:
    """Blobs whose full body has size bytes and a header block of header's hash."""
    head = u32(account) + u64(size) + _digest(tx, account, header)
    for key in tx.keys(b"twins", head):
        yield BlobId(read_u64(key, 20))
