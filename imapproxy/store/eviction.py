"""Keeping an account's cached bodies under its limit: least recently read go first.

Only bodies are evicted (usage.py says what counts and how reads are ordered), and
only those that can be fetched again: every message naming the blob has an upstream
UID, and no outbox entry still needs it (reclaim.pinned_blobs). So what is never
evicted: metadata; a message that exists only here (an APPEND not yet replayed, the
Recovered mailbox and its note); what a queued change carries. A blob no message and
no change names any more is freed whole.

Before a full message goes, its header block is kept when it was not cached on its
own (the header sync may have taken it from the full message), so a header sync keeps
working offline. An evicted body is fetched again when a client reads it online, and
answers ``NO [UNAVAILABLE]`` offline, like any body never fetched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from imapproxy.message import split_header
from imapproxy.store import cache, messages, reclaim, usage
from imapproxy.store._tx import Tx
from imapproxy.store.cache import Kind
from imapproxy.types import AccountId, BlobId

log = logging.getLogger(__name__)

#: Blobs evicted per transaction at most, so one transaction stays short even when a
#: limit was just lowered a long way; the caller runs another.
STEP = 2000


@dataclass
class Evicted:
    blobs: int = 0
    bytes: int = 0
    #: Whether the account is still above the target (more steps to run, or nothing
    #: more may go).
    above: bool = False


def evict(tx: Tx, account: AccountId, target: int) -> Evicted:
    """Evict least recently read bodies until the account's bodies fit in target bytes,
    evicting no more than STEP blobs."""
    done = Evicted()
    if usage.total(tx, account) <= target:
        return done
    pinned = reclaim.pinned_blobs(tx, account)
    if pinned is None:
        log.warning("account %d: an outbox entry cannot be read; nothing evicted", account)
        done.above = True
        return done
    for _, blob in list(usage.oldest(tx, account)):
        if usage.total(tx, account) <= target or done.blobs >= STEP:
            break
        if blob in pinned:
            continue
        users = messages.blob_users(tx, account, blob)
        if not users:
            size = usage.get(tx, account, blob)
            if cache.drop_all(tx, account, blob):
                done.blobs += 1
                done.bytes += size[0] if size else 0
            continue
        if not all(upstream_known for _, _, upstream_known in users):
            continue  # exists only here: cannot be fetched again
        done.bytes += _evict_bodies(tx, account, blob)
        done.blobs += 1
    done.above = usage.total(tx, account) > target
    return done


def _evict_bodies(tx: Tx, account: AccountId, blob: BlobId) -> int:
    if not cache.has(tx, account, blob, Kind.HEADER):
        full = cache.get(tx, account, blob, Kind.FULL)
        if full is not None:
            cache.put(tx, account, blob, Kind.HEADER, split_header(full)[0])
    return cache.drop_bodies(tx, account, blob)
