"""Which blob holds the message Gmail calls X-GM-MSGID n (X-GM-EXT-1).

Gmail shows one message in every folder that carries one of its labels: INBOX and
``[Gmail]/All Mail`` hold the same messages at the same time, a label folder more of
them. Each appearance has its own UID, but X-GM-MSGID is the message's identity
across folders (Google's IMAP extensions). With it the proxy needs no guess (size and
header, store/twins.py): a message whose X-GM-MSGID is known already uses that blob,
so its metadata and body are fetched once for all its folders.

=========  =====================  ==========================================
database   key                    value
=========  =====================  ==========================================
gm_msgid   account(4) msgid(8)    blob(8): the blob of the message Gmail
                                  calls msgid
gm_of      account(4) blob(8)     msgid(8): the key above, to remove it
=========  =====================  ==========================================

An entry lives exactly as long as its blob: the blob's last message may go (a move
between labels) and the entry stays while the blob does (held, or until this
transaction's commit frees it), so the message met in its new folder takes it back;
freeing the blob (cache.drop_all) removes the entry. A store written before this index
existed simply has no entries: the messages get blobs of their own, as before.
"""

from __future__ import annotations

from imapproxy.store._tx import Tx, read_u64, u32, u64
from imapproxy.types import AccountId, BlobId


def _key(account: AccountId, msgid: int) -> bytes:
    return u32(account) + u64(msgid)


def _reverse_key(account: AccountId, blob: BlobId) -> bytes:
    return u32(account) + u64(blob)


def blob_of(tx: Tx, account: AccountId, msgid: int) -> BlobId | None:
    """The blob of the message Gmail calls msgid, while that blob exists."""
    value = tx.get(b"gm_msgid", _key(account, msgid))
    return None if value is None else BlobId(read_u64(value))


def note(tx: Tx, account: AccountId, blob: BlobId, msgid: int) -> None:
    """blob holds the message Gmail calls msgid (the first blob named for it wins)."""
    if tx.has(b"gm_of", _reverse_key(account, blob)):
        return
    if blob_of(tx, account, msgid) is not None:
        return
    tx.put(b"gm_msgid", _key(account, msgid), u64(blob))
    tx.put(b"gm_of", _reverse_key(account, blob), u64(msgid))


def forget(tx: Tx, account: AccountId, blob: BlobId) -> None:
    """blob is freed (nothing happens if it had no X-GM-MSGID)."""
    reverse = _reverse_key(account, blob)
    value = tx.get(b"gm_of", reverse)
    if value is None:
        return
    key = _key(account, read_u64(value))
    found = tx.get(b"gm_msgid", key)
    if found is not None and read_u64(found) == blob:
        tx.delete(b"gm_msgid", key)
    tx.delete(b"gm_of", reverse)


def msgid_of(tx: Tx, account: AccountId, blob: BlobId) -> int | None:
    value = tx.get(b"gm_of", _reverse_key(account, blob))
    return None if value is None else read_u64(value)
