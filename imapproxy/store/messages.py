"""Messages of a replica mailbox: local UID ↔ upstream UID, flags, modseq, metadata.

Key: account(4) mailbox(4) uid(4), so a mailbox's messages are one ordered range.
The reverse map upstream_uids (account, mailbox, upstream uid → local uid) lets a
sync apply upstream FETCH/VANISHED answers without scanning. A message's content
(body, header, ENVELOPE, …) lives in the cache under its blob id, shared by every
copy of the message, so a COPY or MOVE with COPYUID costs no download.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from imapproxy.store._tx import Tx, decode, encode, read_u32, u32
from imapproxy.types import UID, AccountId, BlobId, MailboxId, UpstreamUID


@dataclass(frozen=True)
class Message:
    uid: UID
    upstream_uid: UpstreamUID | None
    flags: tuple[str, ...]
    internaldate: str
    size: int
    modseq: int
    blob: BlobId

    def with_(self, **changes: object) -> Message:
        return replace(self, **changes)  # type: ignore[arg-type]


def prefix(account: AccountId, mailbox: MailboxId) -> bytes:
    return u32(account) + u32(mailbox)


def _encode(message: Message) -> bytes:
    return encode(
        [
            message.upstream_uid,
            list(message.flags),
            message.internaldate,
            message.size,
            message.modseq,
            message.blob,
        ]
    )


def _decode(uid: int, value: bytes) -> Message:
    up, flags, date, size, modseq, blob = decode(value)
    return Message(UID(uid), up, tuple(flags), date, size, modseq, BlobId(blob))


def put(tx: Tx, account: AccountId, mailbox: MailboxId, message: Message) -> None:
    key_prefix = prefix(account, mailbox)
    tx.put(b"messages", key_prefix + u32(message.uid), _encode(message))
    if message.upstream_uid is not None:
        tx.put(b"upstream_uids", key_prefix + u32(message.upstream_uid), u32(message.uid))


def get(tx: Tx, account: AccountId, mailbox: MailboxId, uid: UID) -> Message | None:
    value = tx.get(b"messages", prefix(account, mailbox) + u32(uid))
    return None if value is None else _decode(uid, value)


def get_many(tx: Tx, account: AccountId, mailbox: MailboxId, uids: Iterable[UID]) -> list[Message]:
    key_prefix = prefix(account, mailbox)
    found = []
    for uid in uids:
        value = tx.get(b"messages", key_prefix + u32(uid))
        if value is not None:
            found.append(_decode(uid, value))
    return found


def iterate(tx: Tx, account: AccountId, mailbox: MailboxId) -> Iterator[Message]:
    for key, value in tx.scan(b"messages", prefix(account, mailbox)):
        yield _decode(read_u32(key, 8), value)


def uids(tx: Tx, account: AccountId, mailbox: MailboxId) -> list[UID]:
    return [UID(read_u32(key, 8)) for key, _ in tx.scan(b"messages", prefix(account, mailbox))]


def local_uid(tx: Tx, account: AccountId, mailbox: MailboxId, upstream_uid: int) -> UID | None:
    value = tx.get(b"upstream_uids", prefix(account, mailbox) + u32(upstream_uid))
    return None if value is None else UID(read_u32(value))


def upstream_map(tx: Tx, account: AccountId, mailbox: MailboxId) -> dict[int, UID]:
    return {
        read_u32(key, 8): UID(read_u32(value))
        for key, value in tx.scan(b"upstream_uids", prefix(account, mailbox))
    }


def remove(tx: Tx, account: AccountId, mailbox: MailboxId, message: Message) -> None:
    key_prefix = prefix(account, mailbox)
    tx.delete(b"messages", key_prefix + u32(message.uid))
    if message.upstream_uid is not None:
        tx.delete(b"upstream_uids", key_prefix + u32(message.upstream_uid))
