"""Bodies kept a while after their last message went upstream: it may have only moved.

When another client moves a message, the proxy learns of it as two unrelated events:
an expunge in one folder and a new message in another, in either order and possibly
minutes apart (the other folder is looked at when a client opens it, or on the next
background pass). Were the body freed at the expunge, the new copy would be
downloaded again. So a message the *upstream* removed (sync/mailboxes.py) whose blob
has a cached full body and no other user is not freed at once: the blob is held, and
a new message with the same size and header takes its body (sync/twins.py).

=========  =====================================  ==========================================
database   key                                    value
=========  =====================================  ==========================================
held       account(4) blob(8)                     u64: when it was held (ms since the epoch)
=========  =====================================  ==========================================

A held blob is freed (reclaim.free_unreferenced skips it until then):
- once a complete background pass that began after it was held has ended (every folder
  was looked at and every new message's header compared: a twin would have been found).
  Such a pass is asked for as soon as something is held (sync/background.py), so the
  wait is usually a few seconds: one STATUS per folder, and the metadata of what is new;
- once it has been held HOLD_SECONDS, at the next sync of any mailbox (when no pass
  runs: background sync switched off);
- at once when a twin has taken its body (nothing is left to wait for);
- by eviction, like any body, when the account's cache limit asks for room (a held blob
  has no message, so it is never pinned by one).
Removals made through the proxy (a client's EXPUNGE or MOVE) are not held: a MOVE
through the proxy already gave the body to the copy, and an EXPUNGE is what it says.
"""

from __future__ import annotations

import time

from imapproxy.store._tx import Tx, read_u64, u32, u64
from imapproxy.types import AccountId, BlobId

#: Longest a blob is held when no background pass releases it earlier.
HOLD_SECONDS = 3600


def now_ms() -> int:
    return int(time.time() * 1000)


def _key(account: AccountId, blob: BlobId) -> bytes:
    return u32(account) + u64(blob)


def hold(tx: Tx, account: AccountId, blob: BlobId, stamp: int | None = None) -> None:
    tx.put(b"held", _key(account, blob), u64(now_ms() if stamp is None else stamp))


def is_held(tx: Tx, account: AccountId, blob: BlobId) -> bool:
    return tx.has(b"held", _key(account, blob))


def forget(tx: Tx, account: AccountId, blob: BlobId) -> None:
    tx.delete(b"held", _key(account, blob))


def any_held(tx: Tx, account: AccountId) -> bool:
    return next(tx.keys(b"held", u32(account)), None) is not None


def held_before(tx: Tx, account: AccountId, stamp: int) -> list[BlobId]:
    """Blobs of account held before stamp (ms)."""
    return [
        BlobId(read_u64(key, 4))
        for key, value in tx.scan(b"held", u32(account))
        if read_u64(value) < stamp
    ]
