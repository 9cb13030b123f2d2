"""Dropping a replica mailbox for good, and freeing the cached content only it used.

A message's content lives in the cache under its blob id, shared by every copy of
the message (COPY and MOVE with COPYUID reuse the blob) and by queued APPENDs in the
outbox. So a blob is freed only when no remaining message and no outbox entry names
it; when in doubt (an outbox record we cannot read), nothing is freed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imapproxy.store import mailboxes, messages
from imapproxy.store._tx import Tx, decode, u32, u64
from imapproxy.store.mailboxes import Mailbox
from imapproxy.types import AccountId, BlobId


def drop_mailbox(tx: Tx, mailbox: Mailbox) -> int:
    """Remove mailbox with its messages, UID map and change log; free content no one
    else uses. Returns how many blobs were freed."""
    blobs = {m.blob for m in messages.iterate(tx, mailbox.account, mailbox.id)}
    mailboxes.delete(tx, mailbox)
    return free_unreferenced(tx, mailbox.account, blobs)


def free_unreferenced(tx: Tx, account: AccountId, blobs: Iterable[BlobId]) -> int:
    candidates = set(blobs)
    if not candidates:
        return 0
    referenced = _referenced_by_outbox(tx, account)
    if referenced is None:
        return 0
    for box in mailboxes.all_mailboxes(tx, account):
        referenced.update(m.blob for m in messages.iterate(tx, account, box.id))
    freed = 0
    for blob in candidates - referenced:
        if tx.delete_prefix(b"cache", u32(account) + u64(blob)):
            freed += 1
    return freed


def _referenced_by_outbox(tx: Tx, account: AccountId) -> set[BlobId] | None:
    """Blob ids named by queued changes; None when a record cannot be read (keep all)."""
    found: set[BlobId] = set()
    for _, value in tx.scan(b"outbox", u32(account)):
        try:
            _collect_blobs(decode(value), found)
        except Exception:
            return None
    return found


def _collect_blobs(value: Any, found: set[BlobId]) -> None:
    """Every value under a key that names a blob ("blob", "source_blob", …), at any depth:
    the outbox's record shapes change more often than this rule."""
    if isinstance(value, dict):
        for key, item in value.items():
            if "blob" in str(key).lower() and isinstance(item, int):
                found.add(BlobId(item))
            elif "blob" in str(key).lower() and isinstance(item, list):
                found.update(BlobId(i) for i in item if isinstance(i, int))
                _collect_blobs(item, found)
            else:
                _collect_blobs(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_blobs(item, found)
