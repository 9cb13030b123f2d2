"""X-GM-MSGID as a message's identity across Gmail's folders (X-GM-EXT-1, issue 6).

Dovecot has no X-GM-EXT-1, so this runs sync_messages against a scripted upstream
that behaves like Gmail: INBOX and [Gmail]/All Mail list the same messages under their
own UIDs, with one X-GM-MSGID each. A message met in a second folder shares the blob of
the first: its cached body and metadata are there without a download. Moved between
labels, its held body is taken back. Upstreams without the extension are not asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pytest

from imapproxy.protocol import Atom, FetchAttribute, SequenceSet
from imapproxy.store import Store, Tx, accounts, cache, gmail_ids, held, mailboxes, messages
from imapproxy.store.cache import Kind
from imapproxy.sync import mailboxes as sync
from imapproxy.sync.content import Need, missing
from imapproxy.types import AccountId, BlobId
from imapproxy.upstream.client import SelectInfo
from tests.unit.sync.conftest import run_now

BODY = b"Subject: hi\r\nMessage-ID: <g@x>\r\n\r\nhello\r\n"
ALL_MAIL = "[Gmail]/All Mail"


class Gmail:
    """Folders of (uid, X-GM-MSGID) pairs; only what sync_messages asks for."""

    def __init__(self, folders: dict[str, list[tuple[int, int]]], extension: bool = True) -> None:
        self.folders = folders
        self.extension = extension
        self.selected = ""
        self.keywords_allowed: dict[str, bool] = {}
        self.qresync = False
        self.asked: list[tuple[str, ...]] = []

    def has(self, capability: str) -> bool:
        return self.extension and capability == "X-GM-EXT-1"

    async def select(
        self, name: str, readonly: bool = True, qresync: Any = None, first: Any = None
    ) -> SelectInfo:
        self.selected = name
        listed = self.folders[name]
        uidnext = max((uid for uid, _ in listed), default=0) + 1
        return SelectInfo(5, uidnext, len(listed), None, (), None)

    async def fetch(
        self, uids: SequenceSet, attributes: tuple[FetchAttribute, ...], **_: Any
    ) -> list[dict[str, Any]]:
        self.asked.append(tuple(a.name for a in attributes))
        ((low, high),) = uids.ranges  # type: ignore[attr-defined]
        out = []
        for uid, msgid in self.folders[self.selected]:
            if uid >= low and (high is None or uid <= high):
                item: dict[str, Any] = {
                    "UID": uid,
                    "FLAGS": (Atom("\\Seen"),),
                    "INTERNALDATE": b"01-Jan-2026 00:00:00 +0000",
                    "RFC822.SIZE": len(BODY),
                }
                if any(a.name == "X-GM-MSGID" for a in attributes):
                    item["X-GM-MSGID"] = msgid
                out.append(item)
        return out

    async def search_uids(self, uids: SequenceSet) -> set[int]:
        return {uid for uid, _ in self.folders[self.selected]}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = Store(tmp_path / "replica")
    yield opened
    opened.close()


def _account(store: Store) -> AccountId:
    return store.write(lambda tx: accounts.ensure_account(tx, "imaps://gmail", "ann")).id


def _sync(store: Store, account: AccountId, upstream: Gmail, name: str) -> mailboxes.Mailbox:
    box = store.read(lambda tx: mailboxes.find(tx, account, name))
    if box is None:
        box = store.write(lambda tx: mailboxes.create(tx, account, name))
    synced, _ = run_now(sync.sync_messages(upstream, store, box))  # type: ignore[arg-type]
    return synced


def _messages(store: Store, box: mailboxes.Mailbox) -> dict[int, messages.Message]:
    listed = store.read(lambda tx: list(messages.iterate(tx, box.account, box.id)))
    return {int(m.upstream_uid): m for m in listed}


def _cache_body(store: Store, account: AccountId, blob: BlobId) -> None:
    def put(tx: Tx) -> None:
        cache.put(tx, account, blob, Kind.FULL, BODY)
        cache.put(tx, account, blob, Kind.ENVELOPE, b'(NIL "hi")')

    store.write(put)


def test_the_same_message_in_all_mail_shares_the_blob_of_its_inbox_appearance(
    store: Store,
) -> None:
    account = _account(store)
    gmail = Gmail({"INBOX": [(1, 1001), (2, 1002)], ALL_MAIL: [(10, 1000), (11, 1001), (12, 1002)]})
    inbox = _sync(store, account, gmail, "INBOX")
    assert all("X-GM-MSGID" in asked for asked in gmail.asked)
    in_inbox = _messages(store, inbox)
    _cache_body(store, account, in_inbox[1].blob)  # a client read it in INBOX
    all_mail = _sync(store, account, gmail, ALL_MAIL)
    in_all = _messages(store, all_mail)
    assert in_all[11].blob == in_inbox[1].blob and in_all[12].blob == in_inbox[2].blob
    assert in_all[10].blob not in {m.blob for m in in_inbox.values()}
    # Its body is there without a download, and so is its metadata: nothing to fetch.
    body = store.read(lambda tx: cache.get(tx, account, in_all[11].blob, Kind.FULL))
    assert body == BODY
    needs = {Need(Kind.ENVELOPE), Need(Kind.FULL)}
    assert missing(store, all_mail, [in_all[11]], needs) == {}
    assert missing(store, all_mail, [in_all[12]], needs) != {}


def test_a_message_moved_between_labels_takes_back_its_held_body(store: Store) -> None:
    """Label A to label B without All Mail in between (say All Mail is not synced): the
    message leaves A (its cached body is held), then appears in B with the same id."""
    account = _account(store)
    gmail = Gmail({"Work": [(1, 77)], "Done": []})
    work = _sync(store, account, gmail, "Work")
    blob = _messages(store, work)[1].blob
    _cache_body(store, account, blob)
    _sync(store, account, gmail, "Done")
    gmail.folders = {"Work": [], "Done": [(1, 77)]}
    _sync(store, account, gmail, "Work")
    assert store.read(lambda tx: held.is_held(tx, account, blob))
    done = _sync(store, account, gmail, "Done")
    assert _messages(store, done)[1].blob == blob
    assert not store.read(lambda tx: held.is_held(tx, account, blob))
    assert store.read(lambda tx: cache.get(tx, account, blob, Kind.FULL)) == BODY


def test_the_id_goes_with_the_blob(store: Store) -> None:
    """Once no folder holds the message and its blob is freed, the id names nothing: a
    later message with it gets a blob of its own."""
    account = _account(store)
    gmail = Gmail({"INBOX": [(1, 5)]})
    inbox = _sync(store, account, gmail, "INBOX")
    blob = _messages(store, inbox)[1].blob
    assert store.read(lambda tx: gmail_ids.blob_of(tx, account, 5)) == blob
    gmail.folders = {"INBOX": []}
    _sync(store, account, gmail, "INBOX")  # no body cached: freed at once
    assert store.read(lambda tx: gmail_ids.blob_of(tx, account, 5)) is None
    assert store.read(lambda tx: gmail_ids.msgid_of(tx, account, blob)) is None
    gmail.folders = {"INBOX": [(1, 5), (2, 5)]}
    inbox = _sync(store, account, gmail, "INBOX")
    assert _messages(store, inbox)[2].blob != blob


def test_without_the_extension_it_is_not_asked_and_nothing_is_shared(store: Store) -> None:
    account = _account(store)
    gmail = Gmail({"INBOX": [(1, 1001)], ALL_MAIL: [(11, 1001)]}, extension=False)
    inbox = _sync(store, account, gmail, "INBOX")
    all_mail = _sync(store, account, gmail, ALL_MAIL)
    assert not any("X-GM-MSGID" in asked for asked in gmail.asked)
    assert _messages(store, inbox)[1].blob != _messages(store, all_mail)[11].blob


def test_a_store_from_before_the_index_opens_and_shares_from_then_on(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    Store(path).close()
    env = lmdb.open(str(path), max_dbs=32)
    with env.begin(write=True) as txn:
        for name in (b"gm_msgid", b"gm_of"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
    env.close()
    store = Store(path)
    try:
        account = _account(store)
        gmail = Gmail({"INBOX": [(1, 9)], ALL_MAIL: [(3, 9)]})
        inbox = _sync(store, account, gmail, "INBOX")
        all_mail = _sync(store, account, gmail, ALL_MAIL)
        assert _messages(store, inbox)[1].blob == _messages(store, all_mail)[3].blob
    finally:
        store.close()
