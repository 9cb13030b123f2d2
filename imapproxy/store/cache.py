"""Cached message content, keyed by blob: what was once downloaded is never fetched again.

Key: account(4) blob(8) kind(1) [section hash(8)]. Kinds: ENVELOPE and
BODYSTRUCTURE as the upstream serialized them (served verbatim), the header block,
the full message, and any other body section the upstream was asked for, by the
hash of its section text.
"""

from __future__ import annotations

import hashlib
from enum import Enum

from imapproxy.store._tx import Tx, u32, u64
from imapproxy.types import AccountId, BlobId


class Kind(bytes, Enum):
    ENVELOPE = b"E"
    BODYSTRUCTURE = b"S"
    BODY = b"B"
    HEADER = b"H"
    FULL = b"F"
    SECTION = b"X"


def _key(account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> bytes:
    key = u32(account) + u64(blob) + kind.value
    if kind is Kind.SECTION:
        key += hashlib.sha256(section.encode()).digest()[:8]
    return key


def get(tx: Tx, account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> bytes | None:
    return tx.get(b"cache", _key(account, blob, kind, section))


def has(tx: Tx, account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> bool:
    return tx.get(b"cache", _key(account, blob, kind, section)) is not None


def put(
    tx: Tx, account: AccountId, blob: BlobId, kind: Kind, data: bytes | bytearray, section: str = ""
) -> None:
    tx.put(b"cache", _key(account, blob, kind, section), data)


def new_blob(tx: Tx, account: AccountId) -> BlobId:
    return BlobId(tx.counter(b"blob:" + u32(account)))


def delete(tx: Tx, account: AccountId, blob: BlobId, kind: Kind, section: str = "") -> None:
    tx.delete(b"cache", _key(account, blob, kind, section))
