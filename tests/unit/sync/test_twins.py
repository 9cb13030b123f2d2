"""The same message under two blobs: found by size and header, proved by the bytes, and
never the reason a body another message needs is freed (sync/twins.py, store/twins.py,
store/held.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imapproxy.store import Store, Tx, accounts, cache, eviction, mailboxes, messages, twins
from imapproxy.store import held as held_blobs
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.store.reclaim import release_held
from imapproxy.sync.content import Need, fetch_batch, fetch_missing
from imapproxy.sync.twins import hold_orphan, release_expired, take_twin_body
from imapproxy.types import UID, AccountId, BlobId, UpstreamUID

HEADER = b"Subject: hello\r\nMessage-ID: <1@x>\r\n\r\n"
FULL = HEADER + b"body text\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "replica")
    yield opened
    opened.close()


@pytest.fixture
def account(store: Store) -> AccountId:
    return store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id


def _box(store: Store, account: AccountId, name: str) -> mailboxes.Mailbox:
    return store.write(lambda tx: mailboxes.create(tx, account, name))


def _message(
    store: Store,
    account: AccountId,
    box: mailboxes.Mailbox,
    uid: int,
    blob: int,
    *,
    size: int = len(FULL),
    full: bytes | None = None,
    header: bytes | None = None,
) -> Message:
    message = Message(
        UID(uid), UpstreamUID(uid), (), "01-Jan-2026 00:00:00 +0000", size, 1, BlobId(blob)
    )

    def put(tx: Tx) -> None:
        messages.put(tx, account, box.id, message)
        if full is not None:
            cache.put(tx, account, message.blob, Kind.FULL, full)
            cache.put(tx, account, message.blob, Kind.ENVELOPE, b'(NIL "hello")')
        if header is not None:
            cache.put(tx, account, message.blob, Kind.HEADER, header)

    store.write(put)
    return message


def _full(store: Store, account: AccountId, blob: int) -> bytes | None:
    return store.read(lambda tx: cache.get(tx, account, BlobId(blob), Kind.FULL))


def _take(store: Store, account: AccountId, message: Message, header: bytes = HEADER) -> bool:
    return store.write(lambda tx: take_twin_body(tx, account, message, header))


def _candidates(store: Store, account: AccountId, size: int = len(FULL)) -> list[BlobId]:
    return store.read(lambda tx: list(twins.candidates(tx, account, size, HEADER)))


def test_the_same_size_and_header_take_the_cached_body(store: Store, account: AccountId) -> None:
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    moved = _message(store, account, archive, 1, 20, header=HEADER)
    assert _take(store, account, moved)
    assert _full(store, account, 20) == FULL
    # Metadata it lacked came along; the original keeps its own.
    envelope = store.read(lambda tx: cache.get(tx, account, BlobId(20), Kind.ENVELOPE))
    assert envelope == b'(NIL "hello")'
    assert _full(store, account, 10) == FULL
    assert not _take(store, account, moved)  # has a body now: nothing to take


def test_a_different_header_or_size_takes_nothing(store: Store, account: AccountId) -> None:
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    other = b"Subject: hellp\r\nMessage-ID: <1@x>\r\n\r\n"
    assert len(other) == len(HEADER)
    assert not _take(store, account, _message(store, account, archive, 1, 20), other)
    longer = _message(store, account, archive, 2, 21, size=len(FULL) + 1)
    assert not _take(store, account, longer)
    assert _full(store, account, 20) is None and _full(store, account, 21) is None


def test_a_hash_match_alone_is_never_enough(
    store: Store, account: AccountId, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every header hashes alike here: only the byte comparison tells them apart."""
    monkeypatch.setattr(twins, "header_hash", lambda header: b"\0" * 8)
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    other = b"Subject: other\r\nMessage-ID: <2@x>\r\n\r\n"
    moved = _message(store, account, archive, 1, 20, size=len(FULL))
    assert store.read(lambda tx: list(twins.candidates(tx, account, len(FULL), other))) == [10]
    assert not _take(store, account, moved, other)
    assert _full(store, account, 20) is None


def test_the_index_follows_full_bodies(store: Store, account: AccountId) -> None:
    inbox = _box(store, account, "INBOX")
    _message(store, account, inbox, 1, 10, full=FULL)
    _message(store, account, inbox, 2, 11, full=FULL)
    assert sorted(_candidates(store, account)) == [10, 11]
    store.write(lambda tx: cache.delete(tx, account, BlobId(10), Kind.FULL))
    assert _candidates(store, account) == [11]
    store.write(lambda tx: cache.drop_bodies(tx, account, BlobId(11)))  # eviction
    assert _candidates(store, account) == []
    _message(store, account, inbox, 3, 12, full=FULL)
    store.write(lambda tx: cache.drop_all(tx, account, BlobId(12)))  # freed
    assert _candidates(store, account) == []
    assert store.read(lambda tx: list(tx.keys(b"twin_of", b""))) == []


def _expunge_upstream(store: Store, account: AccountId, box: mailboxes.Mailbox, uid: int) -> None:
    """What sync/mailboxes.py does with a message the upstream no longer has."""

    def remove(tx: Tx) -> None:
        message = messages.get(tx, account, box.id, UID(uid))
        assert message is not None
        messages.remove(tx, account, box.id, message)
        hold_orphan(tx, account, message.blob)

    store.write(remove)


def test_a_body_expunged_upstream_waits_for_its_twin(store: Store, account: AccountId) -> None:
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    _expunge_upstream(store, account, inbox, 1)
    assert _full(store, account, 10) == FULL  # held, not freed with its message
    moved = _message(store, account, archive, 1, 20, header=HEADER)
    assert _take(store, account, moved)
    assert _full(store, account, 20) == FULL
    # Nothing left to wait for: the held copy is gone, whole.
    assert _full(store, account, 10) is None
    assert not store.read(lambda tx: held_blobs.is_held(tx, account, BlobId(10)))
    assert _candidates(store, account) == [20]


def test_held_bodies_go_when_the_wait_is_over(store: Store, account: AccountId) -> None:
    inbox = _box(store, account, "INBOX")
    _message(store, account, inbox, 1, 10, full=FULL)
    _message(store, account, inbox, 2, 11)  # no body cached: nothing worth holding
    _expunge_upstream(store, account, inbox, 1)
    _expunge_upstream(store, account, inbox, 2)
    assert not store.read(lambda tx: held_blobs.is_held(tx, account, BlobId(11)))
    assert _full(store, account, 10) == FULL
    # A pass that began before the hold does not free it; one that began after does.
    assert store.write(lambda tx: release_held(tx, account, 0)) == 0
    assert _full(store, account, 10) == FULL
    later = held_blobs.now_ms() + 1
    assert store.write(lambda tx: release_held(tx, account, later)) == 1
    assert _full(store, account, 10) is None
    assert _candidates(store, account) == []


def test_holding_never_frees_what_another_message_names(store: Store, account: AccountId) -> None:
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    _message(store, account, archive, 1, 10)  # a COPY through the proxy: the same blob
    _expunge_upstream(store, account, inbox, 1)
    assert not store.read(lambda tx: held_blobs.is_held(tx, account, BlobId(10)))
    assert store.write(lambda tx: release_held(tx, account, held_blobs.now_ms() + 1)) == 0
    assert _full(store, account, 10) == FULL


def test_a_long_hold_ends_at_the_next_sync(store: Store, account: AccountId) -> None:
    """With no background pass to end it, a hold lasts HOLD_SECONDS at most."""
    inbox = _box(store, account, "INBOX")
    _message(store, account, inbox, 1, 10, full=FULL)
    _message(store, account, inbox, 2, 11, full=FULL + b"more")
    _expunge_upstream(store, account, inbox, 1)
    _expunge_upstream(store, account, inbox, 2)
    old = held_blobs.now_ms() - held_blobs.HOLD_SECONDS * 1000 - 1
    store.write(lambda tx: held_blobs.hold(tx, account, BlobId(10), old))
    assert store.write(lambda tx: release_expired(tx, account)) == 1
    assert _full(store, account, 10) is None
    assert _full(store, account, 11) is not None


def test_eviction_may_take_a_held_body(store: Store, account: AccountId) -> None:
    inbox = _box(store, account, "INBOX")
    _message(store, account, inbox, 1, 10, full=FULL)
    _expunge_upstream(store, account, inbox, 1)
    done = store.write(lambda tx: eviction.evict(tx, account, 0))
    assert done.blobs == 1
    assert _full(store, account, 10) is None
    assert not store.read(lambda tx: held_blobs.is_held(tx, account, BlobId(10)))
    assert _candidates(store, account) == []


class ScriptedLink:
    """An upstream link that answers UID FETCH from a table, and records what it was asked."""

    max_message = 1 << 30

    def __init__(self, answers: dict[int, dict[str, object]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, ...]] = []

    async def use(self, operation: Any, **how: bool) -> Any:
        """UpstreamLink.use; how it waits for its turn does not matter here."""
        return await operation(self)

    async def ensure_selected(self, name: str) -> None:
        pass

    async def fetch(self, uids: Any, attributes: tuple[Any, ...]) -> list[dict[str, object]]:
        names = tuple(a.response_name().upper() for a in attributes)
        self.asked.append(names)
        out = []
        wanted = {n for first, last in uids.ranges for n in range(first, last + 1)}
        for uid in sorted(wanted & set(self.answers)):
            item: dict[str, object] = {"UID": uid}
            for name in names:
                item[name] = self.answers[uid][name]
            out.append(item)
        return out


def test_a_body_read_asks_for_the_header_first_and_downloads_no_body(
    store: Store, account: AccountId
) -> None:
    """The twin's body is cached, the new message's header is not: one small FETCH of
    the header block, and the body comes from the cache."""
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    moved = _message(store, account, archive, 7, 20)
    link = ScriptedLink({7: {"BODY[HEADER]": HEADER, "BODY[]": b"never sent"}})
    fetched = asyncio.run(
        fetch_missing(link, store, archive, [moved], {Need(Kind.FULL)})  # type: ignore[arg-type]
    )
    assert link.asked == [("BODY[HEADER]",)]
    assert fetched == len(HEADER)
    assert _full(store, account, 20) == FULL


def test_a_body_read_with_no_twin_of_its_size_asks_only_for_the_body(
    store: Store, account: AccountId
) -> None:
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    other = _message(store, account, archive, 7, 20, size=len(FULL) + 3)
    link = ScriptedLink({7: {"BODY[]": FULL + b"abc"}})
    asyncio.run(fetch_missing(link, store, archive, [other], {Need(Kind.FULL)}))  # type: ignore[arg-type]
    assert link.asked == [("BODY[]",)]
    assert _full(store, account, 20) == FULL + b"abc"


def test_same_size_other_header_is_fetched_after_its_header(
    store: Store, account: AccountId
) -> None:
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    header = b"Subject: hellp\r\nMessage-ID: <1@x>\r\n\r\n"
    body = header + b"body text\r\n"
    assert len(body) == len(FULL)
    other = _message(store, account, archive, 7, 20)
    link = ScriptedLink({7: {"BODY[HEADER]": header, "BODY[]": body}})
    asyncio.run(fetch_missing(link, store, archive, [other], {Need(Kind.FULL)}))  # type: ignore[arg-type]
    assert link.asked == [("BODY[HEADER]",), ("BODY[]",)]
    assert _full(store, account, 20) == body


def test_a_header_fetched_with_the_metadata_takes_the_twin_body(
    store: Store, account: AccountId
) -> None:
    """The background sync's metadata fetch (sync/background.py) brings the header
    block: the body is taken then, before any client asks for it."""
    inbox, archive = _box(store, account, "INBOX"), _box(store, account, "Archive")
    _message(store, account, inbox, 1, 10, full=FULL)
    moved = _message(store, account, archive, 7, 20)
    link = ScriptedLink({7: {"BODY[HEADER]": HEADER}})
    asyncio.run(fetch_batch(link, store, archive, [moved], frozenset({Need(Kind.HEADER)})))  # type: ignore[arg-type]
    assert _full(store, account, 20) == FULL


def test_a_header_too_long_to_look_for_is_not_indexed(store: Store, account: AccountId) -> None:
    """The header block is looked for in a bounded prefix (no copy of a large body); a
    message whose header does not end there is simply not a twin."""
    inbox = _box(store, account, "INBOX")
    long_header = b"X-Long: " + b"a" * twins.HEADER_SCAN + b"\r\n\r\n"
    _message(store, account, inbox, 1, 10, full=long_header + b"body\r\n")
    assert store.read(lambda tx: not twins.indexed(tx, account, BlobId(10)))
    big = HEADER + b"x" * (2 * twins.HEADER_SCAN)
    assert twins.header_of(big) == HEADER
