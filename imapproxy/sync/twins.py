"""A message met again under another blob takes the body already cached (issue 6).

Another client's COPY or MOVE, or a delivery to two folders, shows the proxy a new
message it cannot tell from a new one by UID. When its header block is known (the
metadata fetch asks for it with ENVELOPE and BODYSTRUCTURE), a cached full body of
exactly its RFC822.SIZE whose header block is byte-identical is taken as its body:
copied under the message's own blob, so reading it costs no download. The index
(store/twins.py) only points at candidates; the bytes are compared every time.

Why a copy rather than pointing the message at the other blob: a client's FETCH in
flight holds the message record with its blob, and a blob swapped under it would
answer "unavailable" for a moment; a copy changes nothing anyone holds, and every
blob keeps exactly the users store/messages.py records, so reference counting,
the cache limit and eviction need no new rule. The copy costs disk only while both
messages stay: when the other one was removed upstream and its blob was held for
this (store/held.py: the usual end of a move), that blob is freed at once.

A sync that removes a message the upstream expunged calls ``hold_orphan`` so that its
body waits for the twin that may appear in another folder.

Where the upstream is Gmail (X-GM-EXT-1), no guess is needed: X-GM-MSGID is the
message's identity in every folder (INBOX and [Gmail]/All Mail hold the same messages
at once, not only after a move). A new message whose X-GM-MSGID the replica has met
is given that blob itself when it is added (``gmail_blob``): nothing is copied or
swapped under a reader, and its metadata and body are fetched once for all folders.
"""

from __future__ import annotations

from collections.abc import Iterable

from imapproxy.store import Tx, cache, gmail_ids, messages, reclaim, twins, usage
from imapproxy.store import held as held_blobs
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.types import AccountId, BlobId

#: Metadata copied along with the body where the message lacks it: all of it follows
#: from the bytes, which are the same.
METADATA = (Kind.ENVELOPE, Kind.BODYSTRUCTURE, Kind.BODY, Kind.HEADER)


def find_twin(tx: Tx, account: AccountId, message: Message, header: bytes) -> BlobId | None:
    """Another blob whose full body is message.size bytes with exactly this header."""
    for blob in twins.candidates(tx, account, message.size, header):
        if blob == message.blob:
            continue
        full = cache.get(tx, account, blob, Kind.FULL)
        if full is None or len(full) != message.size or twins.header_of(full) != header:
            continue  # a hint that outlived its body, or another header of the same hash
        return blob
    return None


def take_twin_body(tx: Tx, account: AccountId, message: Message, header: bytes) -> bool:
    """Give message the cached body of its twin, if it lacks one and a twin is cached;
    returns whether it did."""
    if cache.has(tx, account, message.blob, Kind.FULL):
        return False
    twin = find_twin(tx, account, message, header)
    if twin is None:
        return False
    full = cache.get(tx, account, twin, Kind.FULL)
    assert full is not None
    used = usage.get(tx, account, twin)
    cache.put(tx, account, message.blob, Kind.FULL, full, stamp=used[1] if used else None)
    for kind in METADATA:
        if not cache.has(tx, account, message.blob, kind):
            data = cache.get(tx, account, twin, kind)
            if data is not None:
                cache.put(tx, account, message.blob, kind, data)
    # Expunged since the caller looked: what was just copied is freed at commit.
    tx.maybe_unused.add((account, message.blob))
    if held_blobs.is_held(tx, account, twin):
        # It waited for this message: nothing is left to wait for.
        held_blobs.forget(tx, account, twin)
        reclaim.free_unreferenced(tx, account, [twin])
    return True


def take_cached(
    tx: Tx, account: AccountId, found: Iterable[tuple[Message, bytes]]
) -> list[Message]:
    """take_twin_body for each (message, header); returns the messages that took one."""
    return [m for m, header in found if take_twin_body(tx, account, m, header)]


def hold_orphan(tx: Tx, account: AccountId, blob: BlobId) -> None:
    """The upstream expunged the last message naming blob: if a full body is cached,
    keep it a while for a twin (store/held.py); let go of what was held too long."""
    if messages.blob_users(tx, account, blob) or not twins.indexed(tx, account, blob):
        return
    held_blobs.hold(tx, account, blob)


def release_expired(tx: Tx, account: AccountId) -> int:
    """Free what was held longer than HOLD_SECONDS (with no background pass to end the
    wait sooner, every sync of a mailbox ends it on time); returns blobs freed."""
    return reclaim.release_held(tx, account, held_blobs.now_ms() - held_blobs.HOLD_SECONDS * 1000)


def gmail_blob(tx: Tx, account: AccountId, msgid: int) -> BlobId | None:
    """The blob of the message Gmail calls msgid, if the replica has it (in any folder,
    or held since its last folder lost it): a new appearance of it uses that blob. A
    held blob is held no more: its message is back."""
    blob = gmail_ids.blob_of(tx, account, msgid)
    if blob is not None and held_blobs.is_held(tx, account, blob):
        held_blobs.forget(tx, account, blob)
    return blob


def note_gmail_id(tx: Tx, account: AccountId, blob: BlobId, msgid: int) -> None:
    """blob holds the message Gmail calls msgid."""
    gmail_ids.note(tx, account, blob, msgid)
