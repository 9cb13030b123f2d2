"""Replica edits the outbox makes: local messages, links, the Recovered mailbox, notes.

Every change here bumps the mailbox's modseq and logs it, as the sync engine does, so
CONDSTORE clients and the sync's "changed locally meanwhile" guard see it. Functions
return what changed; the caller publishes it after the transaction commits.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from imapproxy.notify import MailboxChange
from imapproxy.protocol import format_datetime, parse_datetime
from imapproxy.store import Tx, cache, mailboxes, messages, outbox
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.types import UID, AccountId, BlobId, MailboxId, UpstreamUID

log = logging.getLogger(__name__)

#: Local-only mailbox holding what the upstream refused for good (ANCHORS: Gluon's
#: "Recovered Messages"). Never synced, never sent upstream.
RECOVERED = "Recovered"


def is_local(mailbox: Mailbox) -> bool:
    """A mailbox that exists only in the replica (Recovered): nothing of it goes upstream."""
    return bool(mailbox.extra.get("local"))


def now_internaldate() -> str:
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


def same_date(a: str, b: str) -> bool:
    """INTERNALDATEs as instants (servers differ in zero-padding the day)."""
    try:
        return parse_datetime(a.strip()) == parse_datetime(b.strip())
    except Exception:
        return a.strip() == b.strip()


def add(
    tx: Tx,
    mailbox: Mailbox,
    upstream_uid: int | None,
    flags: Iterable[str],
    internaldate: str,
    size: int,
    blob: int,
) -> tuple[Mailbox, Message]:
    """A message at the end of the local UID space; the caller stores the mailbox."""
    mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
    message = Message(
        UID(mailbox.uidnext),
        None if upstream_uid is None else UpstreamUID(upstream_uid),
        tuple(flags),
        internaldate,
        size,
        modseq,
        BlobId(blob),
    )
    messages.put(tx, mailbox.account, mailbox.id, message)
    return mailbox.with_(uidnext=message.uid + 1), message


def remove(tx: Tx, mailbox: Mailbox, uids: Iterable[int]) -> tuple[Mailbox, list[Message]]:
    """Remove these messages (those still there); the caller stores the mailbox."""
    removed = []
    for uid in uids:
        message = messages.get(tx, mailbox.account, mailbox.id, UID(uid))
        if message is None:
            continue
        messages.remove(tx, mailbox.account, mailbox.id, message)
        mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
        mailboxes.log_change(tx, mailbox, modseq, {"uid": uid, "what": "expunge"})
        removed.append(message)
    return mailbox, removed


def set_flags(tx: Tx, mailbox: Mailbox, message: Message, flags: tuple[str, ...]) -> Mailbox:
    if tuple(flags) == message.flags:
        return mailbox
    mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
    messages.put(tx, mailbox.account, mailbox.id, message.with_(flags=tuple(flags), modseq=modseq))
    mailboxes.log_change(tx, mailbox, modseq, {"uid": message.uid, "what": "flags"})
    return mailbox


def apply_delta(
    flags: tuple[str, ...], add_: Iterable[str], remove_: Iterable[str]
) -> tuple[str, ...]:
    """Flags after removing remove_ and adding add_ (case-insensitive, order kept)."""
    removed = {f.upper() for f in remove_}
    out = [f for f in flags if f.upper() not in removed]
    present = {f.upper() for f in out}
    for flag in add_:
        if flag.upper() not in present:
            out.append(flag)
            present.add(flag.upper())
    return tuple(out)


def link(
    tx: Tx, account: AccountId, mailbox_id: int, uid: int, validity: int, upstream_uid: int
) -> MailboxChange | None:
    """The upstream told us where a message we created locally landed: remember it
    (for later entries naming it) and key the replica's copy to it, so the sync never
    downloads it again. If a sync got there first and added the upstream message as a
    new local one, that duplicate goes (the client keeps the UID it was told)."""
    outbox.put_link(tx, account, MailboxId(mailbox_id), uid, validity, upstream_uid)
    mailbox = mailboxes.get(tx, account, MailboxId(mailbox_id))
    if mailbox is None or mailbox.upstream_uidvalidity not in (None, validity):
        return None
    message = messages.get(tx, account, mailbox.id, UID(uid))
    if message is None or message.upstream_uid is not None:
        return None
    expunged: list[UID] = []
    other = messages.local_uid(tx, account, mailbox.id, upstream_uid)
    if other is not None and other != message.uid:
        mailbox, gone = remove(tx, mailbox, [other])
        expunged = [m.uid for m in gone]
    messages.put(tx, account, mailbox.id, message.with_(upstream_uid=UpstreamUID(upstream_uid)))
    if mailbox.upstream_uidvalidity is None:
        mailbox = mailbox.with_(upstream_uidvalidity=validity)
    mailboxes.put(tx, mailbox)
    return MailboxChange(mailbox.id, expunged=tuple(expunged)) if expunged else None


def local_mailbox(tx: Tx, account: AccountId, name: str) -> Mailbox:
    """Find or create a local-only mailbox."""
    found = mailboxes.find(tx, account, name)
    if found is not None:
        return found
    inbox = mailboxes.find(tx, account, "INBOX")
    delimiter = inbox.delimiter if inbox is not None else "/"
    return mailboxes.create(
        tx, account, name, delimiter=delimiter, subscribed=True, extra={"local": True}
    )


def keep_in_recovered(
    tx: Tx, account: AccountId, blob: int, flags: Iterable[str], date: str, size: int
) -> MailboxChange:
    """Put a message the upstream refused where the user sees it."""
    mailbox = local_mailbox(tx, account, RECOVERED)
    mailbox, _ = add(tx, mailbox, None, flags, date, size, blob)
    mailboxes.put(tx, mailbox)
    return MailboxChange(mailbox.id, added=True)


def add_note(tx: Tx, account: AccountId, lines: list[str]) -> MailboxChange | None:
    """A short local message in INBOX saying which changes the upstream refused."""
    inbox = mailboxes.find(tx, account, "INBOX")
    if inbox is None:
        return None
    body = (
        "Your mail server refused changes made through imapproxy (for example while\r\n"
        "you were offline). Nothing was thrown away: refused messages are in the\r\n"
        f'local folder "{RECOVERED}", and `imapproxy status` lists every refused change.\r\n'
        "\r\n" + "".join(f"- {line}\r\n" for line in lines)
    )
    raw = (
        "From: imapproxy <imapproxy@localhost>\r\n"
        "To: you\r\n"
        f"Subject: imapproxy: {len(lines)} change(s) refused by the mail server\r\n"
        f"Date: {email.utils.formatdate(time.time())}\r\n"
        f"Message-ID: <{time.time_ns()}.refused@imapproxy.invalid>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n" + body
    ).encode()
    blob = cache.new_blob(tx, account)
    cache.put(tx, account, blob, cache.Kind.FULL, raw)
    inbox, _ = add(tx, inbox, None, (), now_internaldate(), len(raw), blob)
    mailboxes.put(tx, inbox)
    return MailboxChange(inbox.id, added=True)
