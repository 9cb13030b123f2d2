"""Prefetch under a cache limit: it fills only the room below the low water mark, never
evicts what a client read, and its bodies are stamped as not read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_twisted

from imapproxy.store import Store, Tx, accounts, cache, mailboxes, messages, usage
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.sync.prefetch import fetch_bodies, first_batch
from imapproxy.types import UID, BlobId, UpstreamUID

SIZE = 1000
DATE = "01-Jun-2026 10:00:00 +0000"


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    async def ensure_selected(self, name: str) -> None:
        return None

    async def fetch(self, uids: Any, attributes: Any) -> list[dict[str, Any]]:
        wanted = [int(u) for u in str(uids).replace(":", ",").split(",")]
        self.asked.append(wanted)
        return [{"UID": u, "BODY[]": b"b" * SIZE} for u in wanted]


class FakeLink:
    max_message = 2**30

    def __init__(self) -> None:
        self.client = FakeClient()

    async def use(
        self,
        operation: Callable[[Any], Awaitable[Any]],
        background: bool = False,
        reads_only: bool = False,
        spare: bool = False,
    ) -> Any:
        return await operation(self.client)


def _message(uid: int) -> Message:
    return Message(UID(uid), UpstreamUID(uid), (), DATE, SIZE, 1, BlobId(uid))


def test_first_batch_stops_at_the_room_left() -> None:
    wanted = [_message(u) for u in (5, 4, 3)]
    assert first_batch(wanted, 10 * SIZE) == wanted
    assert first_batch(wanted, 10 * SIZE, room=2 * SIZE + 10) == wanted[:2]
    assert first_batch(wanted, 10 * SIZE, room=SIZE - 1) == []  # not even one


@pytest_twisted.ensureDeferred
async def test_prefetch_fills_the_room_and_leaves_what_was_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
        box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))

        def seed(tx: Tx) -> None:
            for uid in range(1, 7):
                messages.put(tx, account, box.id, _message(uid))
            cache.put(tx, account, BlobId(1), Kind.FULL, b"r" * SIZE)  # a client read it

        store.write(seed)
        store.set_cache_limit(account, 3500)  # low water 3325: room for 2 more bodies
        link = FakeLink()
        wanted = [_message(u) for u in (6, 5, 4, 3, 2)]  # newest first, as planned
        done: list[int] = []
        finished = await fetch_bodies(
            link,  # type: ignore[arg-type]
            store,
            box,
            wanted,
            lambda: SIZE,  # one message per turn
            lambda count, size, seconds: done.append(count),
            lambda: 0.0,
        )
        assert finished is False  # stopped for lack of room
        assert link.client.asked == [[6], [5]]
        assert store.read(lambda tx: usage.total(tx, account)) == 3 * SIZE
        assert store.read(lambda tx: cache.has(tx, account, BlobId(1), Kind.FULL))
        read_stamp = store.read(lambda tx: usage.get(tx, account, BlobId(1)))[1]  # type: ignore[index]
        for blob in (5, 6):
            stamp = store.read(lambda tx, b=blob: usage.get(tx, account, BlobId(b)))[1]  # type: ignore[index]
            assert stamp < read_stamp
        # A read that needs room evicts prefetched bodies before the one read earlier.
        store.write(lambda tx: cache.put(tx, account, BlobId(2), Kind.FULL, b"n" * SIZE))
        store.write(lambda tx: cache.put(tx, account, BlobId(3), Kind.FULL, b"n" * SIZE))
        store.enforce_limit(account)
        kept = {
            b
            for b in range(1, 7)
            if store.read(lambda tx, b=b: cache.has(tx, account, BlobId(b), Kind.FULL))
        }
        assert kept == {1, 2, 3}
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_a_body_arriving_after_its_expunge_is_not_kept(tmp_path: Path) -> None:
    from imapproxy.sync.content import Need, fetch_batch

    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
        box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))
        store.write(lambda tx: messages.put(tx, account, box.id, _message(1)))
        # Message 2 was expunged while its FETCH was on the link.
        got = await fetch_batch(
            FakeLink(),  # type: ignore[arg-type]
            store,
            box,
            [_message(1), _message(2)],
            frozenset({Need(Kind.FULL)}),
        )
        assert got == 2 * SIZE
        assert store.read(lambda tx: cache.has(tx, account, BlobId(1), Kind.FULL))
        assert not store.read(lambda tx: cache.has(tx, account, BlobId(2), Kind.FULL))
        assert store.read(lambda tx: usage.total(tx, account)) == SIZE
    finally:
        store.close()
