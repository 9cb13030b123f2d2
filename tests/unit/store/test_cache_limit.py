"""The cache limit: bodies are counted, the least recently read go first, and what cannot
be fetched again (local messages, queued changes) or is metadata is never evicted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imapproxy.store import Store, Tx, accounts, cache, mailboxes, messages, outbox, usage
from imapproxy.store.cache import Kind
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.types import UID, AccountId, BlobId, UpstreamUID

BODY = 1000
HEADER = b"Subject: x\r\n\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "replica")
    try:
        yield store
    finally:
        store.close()


def _account(store: Store) -> AccountId:
    return store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id


def _add(
    store: Store,
    account: AccountId,
    box: Mailbox,
    uid: int,
    *,
    upstream: bool = True,
    stamp: int | None = None,
    header: bool = True,
) -> BlobId:
    """A message whose body (BODY bytes) and metadata are cached; blob = uid."""
    blob = BlobId(uid)

    def add(tx: Tx) -> None:
        message = Message(
            UID(uid),
            UpstreamUID(uid) if upstream else None,
            (),
            "01-Jan-2026 00:00:00 +0000",
            BODY,
            1,
            blob,
        )
        messages.put(tx, account, box.id, message)
        full = HEADER + b"x" * (BODY - len(HEADER))
        cache.put(tx, account, blob, Kind.FULL, full, stamp=stamp)
        cache.put(tx, account, blob, Kind.ENVELOPE, b"(NIL)")
        if header:
            cache.put(tx, account, blob, Kind.HEADER, HEADER)

    store.write(add)
    return blob


def _bodies(store: Store, account: AccountId) -> set[int]:
    """Blobs whose full body is cached, read from the cache itself (not usage)."""

    def scan(tx: Tx) -> set[int]:
        prefix = account.to_bytes(4, "big")
        return {
            int.from_bytes(key[4:12]) for key in tx.keys(b"cache", prefix) if key[12:13] == b"F"
        }

    return store.read(scan)


def _total(store: Store, account: AccountId) -> int:
    return store.read(lambda tx: usage.total(tx, account))


def test_bodies_are_counted_and_metadata_is_not(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    for uid in (1, 2, 3):
        _add(store, account, box, uid)
    assert _total(store, account) == 3 * BODY
    store.write(lambda tx: cache.put(tx, account, BlobId(1), Kind.SECTION, b"abc", "1"))
    assert _total(store, account) == 3 * BODY + 3
    # Overwriting a section counts its new size only.
    store.write(lambda tx: cache.put(tx, account, BlobId(1), Kind.SECTION, b"abcdef", "1"))
    assert _total(store, account) == 3 * BODY + 6


def test_least_recently_read_go_first(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    # Fetched in order 1..6 (stamps 1000..6000 ms), then 1 and 2 read again later.
    for uid in range(1, 7):
        _add(store, account, box, uid, stamp=uid * 1000)
    store.note_reads(account, [BlobId(1), BlobId(2)])
    # No write yet: reads are batched in memory.
    assert store.read(lambda tx: usage.get(tx, account, BlobId(1))) == (BODY, 1000)
    store.set_cache_limit(account, 4 * BODY)
    evicted = store.enforce_limit(account)
    # Down to the low water mark (95% of 4000 = 3800): three bodies go, 3, 4 and 5:
    # the oldest reads, never the two read just now.
    assert evicted == 3 * BODY
    assert _bodies(store, account) == {1, 2, 6}
    assert _total(store, account) == 3 * BODY
    # Metadata stays: a header sync works offline for every message.
    for uid in (3, 4, 5):
        assert store.read(lambda tx, b=uid: cache.get(tx, account, BlobId(b), Kind.ENVELOPE))
        assert store.read(lambda tx, b=uid: cache.get(tx, account, BlobId(b), Kind.HEADER))
    # The pending reads were written with the eviction.
    assert store.read(lambda tx: usage.get(tx, account, BlobId(1)))[1] > 6000  # type: ignore[index]


def test_prefetched_bodies_go_before_anything_read(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    read_long_ago = 1_500_000_000_000  # a read in 2017 (ms), before the mail below arrived
    _add(store, account, box, 1, stamp=read_long_ago)
    _add(store, account, box, 2, stamp=usage.prefetch_stamp(1_700_000_000))  # newer mail
    _add(store, account, box, 3, stamp=usage.prefetch_stamp(1_600_000_000))  # older mail
    _add(store, account, box, 4)  # read now
    # Limits with room for 3, then 2 bodies below the low water mark.
    store.set_cache_limit(account, 3200)
    store.enforce_limit(account)
    assert _bodies(store, account) == {1, 2, 4}  # the oldest prefetched, unread, went
    store.set_cache_limit(account, 2200)
    store.enforce_limit(account)
    assert _bodies(store, account) == {1, 4}
    # Reading a prefetched body gives it a read stamp: it is no longer first to go.
    _add(store, account, box, 5, stamp=usage.prefetch_stamp(1_700_000_000))
    store.note_reads(account, [BlobId(5)])
    store.set_cache_limit(account, 1100)
    store.enforce_limit(account)
    assert _bodies(store, account) == {5}


def test_what_cannot_be_fetched_again_is_never_evicted(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "Drafts"))
    recovered = store.write(
        lambda tx: mailboxes.create(tx, account, "Recovered", extra={"local": True})
    )
    _add(store, account, box, 1, stamp=1)  # an offline APPEND, not replayed yet
    store.write(lambda tx: outbox.add(tx, account, "append", {"mailbox": int(box.id), "blob": 1}))
    _add(store, account, box, 2, upstream=False, stamp=2)  # local, its APPEND replayed
    _add(store, account, recovered, 3, upstream=False, stamp=3)  # refused data
    # On the upstream, but a queued MOVE would bring it back here if refused.
    _add(store, account, box, 4, stamp=4)
    ref = [4, 4, "01-Jan-2026 00:00:00 +0000", BODY, None, [], 4]
    store.write(lambda tx: outbox.add(tx, account, "copy", {"refs": [ref], "move": True}))
    _add(store, account, box, 5, stamp=5)  # on the upstream: may go
    store.set_cache_limit(account, BODY)
    store.enforce_limit(account)
    assert _bodies(store, account) == {1, 2, 3, 4}
    assert _total(store, account) == 4 * BODY  # above the limit: nothing else may go


def test_an_unreadable_outbox_entry_stops_eviction(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    _add(store, account, box, 1)
    store.write(lambda tx: tx.put(b"outbox", account.to_bytes(4, "big") + bytes(8), b"{not json"))
    store.set_cache_limit(account, 1)
    assert store.enforce_limit(account) == 0
    assert _bodies(store, account) == {1}


def test_eviction_keeps_the_header_it_derived_from(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    _add(store, account, box, 1, header=False)  # the header sync found the full body
    store.set_cache_limit(account, 1)
    store.enforce_limit(account)
    assert _bodies(store, account) == set()
    assert store.read(lambda tx: cache.get(tx, account, BlobId(1), Kind.HEADER)) == HEADER


def test_a_copy_shares_its_body_and_an_evicted_body_can_come_back(store: Store) -> None:
    account = _account(store)
    a = store.write(lambda tx: mailboxes.create(tx, account, "A"))
    b = store.write(lambda tx: mailboxes.create(tx, account, "B"))
    _add(store, account, a, 1, stamp=1)

    def copy(tx: Tx) -> None:
        message = messages.get(tx, account, a.id, UID(1))
        assert message is not None
        messages.put(tx, account, b.id, message.with_(uid=UID(7)))

    store.write(copy)
    assert store.read(lambda tx: messages.blob_users(tx, account, BlobId(1))) == [
        (a.id, 1, True),
        (b.id, 7, True),
    ]
    store.set_cache_limit(account, 1)
    store.enforce_limit(account)
    assert _bodies(store, account) == set()
    # Read again online: fetched and counted again.
    store.set_cache_limit(account, None)
    store.write(lambda tx: cache.put(tx, account, BlobId(1), Kind.FULL, b"y" * BODY))
    assert _total(store, account) == BODY


def test_no_limit_evicts_nothing(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    for uid in range(1, 4):
        _add(store, account, box, uid)
    assert store.enforce_limit(account) == 0
    assert store.cache_room(account) is None
    store.set_cache_limit(account, 10 * BODY)
    assert store.cache_room(account) == int(10 * BODY * usage.LOW_WATER) - 3 * BODY


def test_limits_are_per_account(store: Store) -> None:
    ann = _account(store)
    bob = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "bob")).id
    for account in (ann, bob):
        box = store.write(lambda tx, a=account: mailboxes.create(tx, a, "INBOX"))
        for uid in range(1, 4):
            _add(store, account, box, uid)
    store.set_cache_limit(ann, BODY)
    store.enforce_limit(ann)
    assert _bodies(store, ann) == set()
    assert _total(store, ann) == 0
    assert _bodies(store, bob) == {1, 2, 3}
    assert _total(store, bob) == 3 * BODY


def test_reads_are_written_in_batches(store: Store) -> None:
    account = _account(store)
    box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
    _add(store, account, box, 1, stamp=1000)
    now = [0.0]
    store.reads.clock = lambda: now[0]
    store.reads.written({})  # start the batch clock at 0
    store.note_reads(account, [BlobId(1)])
    assert not store.reads.due()
    now[0] = 31.0
    assert store.reads.due()
    store.enforce_limit(account)  # under no limit: only writes the due batch
    assert store.read(lambda tx: usage.get(tx, account, BlobId(1)))[1] > 1000  # type: ignore[index]
    assert not store.reads.due()
