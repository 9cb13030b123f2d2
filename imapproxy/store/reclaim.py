"""Freeing cached content no one needs: expunged messages, dropped mailboxes, done changes.

A message's content lives in the cache under its blob id, shared by every copy of
the message (COPY and MOVE with COPYUID reuse the blob) and by changes in the outbox
(an APPEND's message; the messages an EXPUNGE or MOVE would bring back if the
upstream refused it). So a blob is freed only when no message names it
(messages.blob_users) and no outbox entry that may still need it does; when in doubt
(an outbox record we cannot read), nothing is freed.

Which outbox entries pin content: those still queued, and those that failed on the
proxy (never re-sent blindly: someone may still act on them). An entry the upstream
refused for good does not: its change was undone in the replica, and what it carried
was put where the user sees it (a refused APPEND's message is in the local
"Recovered" mailbox, which keeps the blob for as long as the user keeps the message).

Freeing happens in the transaction that let go of the blob: message removals and
outbox entries leaving the queue note their blobs on the transaction
(``Tx.maybe_unused``), and the store calls ``free_pending`` before it commits.

A blob the upstream's own expunge left without a message may be held a while instead
(held.py: the message may only have moved to a folder not looked at yet); it is freed
by ``release_held`` once that wait is over.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from imapproxy.store import cache, held, mailboxes, messages
from imapproxy.store._tx import Tx, decode, u32
from imapproxy.store.mailboxes import Mailbox
from imapproxy.types import AccountId, BlobId

#: Outbox states whose entries no longer pin content (see the module docstring).
UNPINNED_STATES = frozenset({"refused"})


def drop_mailbox(tx: Tx, mailbox: Mailbox) -> int:
    """Remove mailbox with its messages, UID map and change log; free content no one
    else uses. Returns how many blobs were freed."""
    blobs = {m.blob for m in messages.iterate(tx, mailbox.account, mailbox.id)}
    mailboxes.delete(tx, mailbox)
    return free_unreferenced(tx, mailbox.account, blobs)


def free_unreferenced(tx: Tx, account: AccountId, blobs: Iterable[BlobId]) -> int:
    """Free those of blobs that no message and no pinning outbox entry names, and that
    are not held (held.py); returns how many had content."""
    candidates = {
        b
        for b in blobs
        if not messages.blob_users(tx, account, b) and not held.is_held(tx, account, b)
    }
    if not candidates:
        return 0
    pinned = pinned_blobs(tx, account)
    if pinned is None:
        return 0
    freed = 0
    for blob in candidates - pinned:
        if cache.drop_all(tx, account, blob):
            freed += 1
    return freed


def release_held(tx: Tx, account: AccountId, before: int) -> int:
    """Stop holding the blobs of account held before ``before`` (ms) and free those no
    one took meanwhile; returns how many were freed."""
    blobs = held.held_before(tx, account, before)
    for blob in blobs:
        held.forget(tx, account, blob)
    return free_unreferenced(tx, account, blobs)


def free_pending(tx: Tx) -> int:
    """Free what this transaction let go of (``Tx.maybe_unused``); returns blobs freed."""
    if not tx.maybe_unused:
        return 0
    by_account: dict[int, set[BlobId]] = defaultdict(set)
    for account, blob in tx.maybe_unused:
        by_account[account].add(BlobId(blob))
    tx.maybe_unused.clear()
    return sum(free_unreferenced(tx, AccountId(a), blobs) for a, blobs in by_account.items())


def pinned_blobs(tx: Tx, account: AccountId) -> set[BlobId] | None:
    """Blob ids that outbox entries may still need; None when a record cannot be read
    (it might name any blob: keep all)."""
    found: set[BlobId] = set()
    for _, value in tx.scan(b"outbox", u32(account)):
        try:
            record = decode(value)
            if record.get("state") in UNPINNED_STATES:
                continue
            collect_blobs(record, found)
        except Exception:
            return None
    return found


def collect_blobs(value: Any, found: set[BlobId]) -> None:
    """Every value under a key that names a blob ("blob", "source_blob", …), at any depth,
    and the blob of every message ref (outbox/refs.py: a list whose last item is the
    blob): the outbox's record shapes change more often than this rule."""
    if isinstance(value, dict):
        for key, item in value.items():
            if "blob" in str(key).lower() and isinstance(item, int):
                found.add(BlobId(item))
            elif "blob" in str(key).lower() and isinstance(item, list):
                found.update(BlobId(i) for i in item if isinstance(i, int))
                collect_blobs(item, found)
            elif str(key) == "refs" and isinstance(item, list):
                for ref in item:
                    if isinstance(ref, list) and ref and isinstance(ref[-1], int):
                        found.add(BlobId(ref[-1]))
                collect_blobs(item, found)
            else:
                collect_blobs(item, found)
    elif isinstance(value, list):
        for item in value:
            collect_blobs(item, found)
