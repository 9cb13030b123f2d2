"""What a batch of upstream FETCH answers leaves in the cache (sync/content.py _keep)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from imapproxy.store import Store, Tx, accounts, cache, mailboxes, messages
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.sync import content
from imapproxy.types import UID, BlobId, UpstreamUID


def test_a_nil_body_is_not_kept_as_an_empty_message(tmp_path: Path) -> None:
    """The upstream answers ``BODY[] NIL`` for a message expunged while the FETCH was on
    its way: caching b"" made the proxy answer ``BODY[] ""`` with OK (seen once in
    test_expunged_meanwhile). Nothing is kept; the next read says it is gone."""
    store = Store(tmp_path / "replica")
    try:
        account = store.write(lambda tx: accounts.ensure_account(tx, "imaps://x", "ann")).id
        box = store.write(lambda tx: mailboxes.create(tx, account, "INBOX"))

        def add(tx: object) -> Message:
            blob = cache.new_blob(tx, account)  # type: ignore[arg-type]
            message = Message(UID(1), UpstreamUID(7), (), "01-Jan-2026 00:00:00 +0000", 5, 1, blob)
            messages.put(tx, account, box.id, message)  # type: ignore[arg-type]
            return message

        message = store.write(add)
        needs = frozenset({content.Need(Kind.FULL), content.HEADER_NEED})
        answer = {"UID": 7, "BODY[]": None, "BODY[HEADER]": None}
        fetched = list(content._content({7: message}, needs, [answer]))
        assert fetched == [(message, answer, [])]  # nothing to serve either
        kept = store.write(lambda tx: content._keep(tx, box, needs, fetched))
        assert kept == 0
        for kind in (Kind.FULL, Kind.HEADER):
            assert not store.read(lambda tx, k=kind: cache.has(tx, account, message.blob, k))
    finally:
        store.close()


def test_fetched_content_is_served_until_kept_and_a_failed_keep_loses_no_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What is held is kept in one transaction; if that fails, each batch on its own,
    so a batch that cannot be kept loses no other."""
    store = Store(tmp_path / "replica")
    try:
        message = Message(UID(1), UpstreamUID(7), (), "01-Jan-2026 00:00:00 +0000", 5, 1, BlobId(3))
        fresh = content.Fetched()
        full = content.Need(Kind.FULL)

        def broken(tx: Tx) -> int:
            raise OSError("disk full")

        def second(tx: Tx) -> int:
            cache.put(tx, 1, BlobId(4), Kind.ENVELOPE, b"(NIL)")
            return 5

        fresh.add([(message, {}, [(full, b"hello")])], store, broken)
        fresh.add([], store, second)
        assert fresh.pending and fresh.held_bytes == 5
        assert fresh.get(BlobId(3), Kind.FULL) == b"hello"
        assert fresh.has(BlobId(3), Kind.FULL) and not fresh.has(BlobId(3), Kind.HEADER)
        assert fresh.get(BlobId(3), Kind.HEADER) is None
        with caplog.at_level(logging.ERROR):
            assert fresh.keep() == 5
        assert store.read(lambda tx: cache.get(tx, 1, BlobId(4), Kind.ENVELOPE)) == b"(NIL)"
        assert "could not keep fetched content" in caplog.text
        # Let go of: what was kept is read from the cache from now on.
        assert not fresh.pending and fresh.held_bytes == 0
        assert fresh.get(BlobId(3), Kind.FULL) is None
    finally:
        store.close()
