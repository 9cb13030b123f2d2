"""The changes a client can make, as outbox entries: what to send, how to apply the answer.

Arguments are plain JSON (they are stored in the outbox before anything is sent) and
name messages by both local and upstream UID, as captured when the client asked:
replay never depends on sequence numbers or on replica state that may have moved.
Flag changes are sent as deltas (+FLAGS.SILENT / -FLAGS.SILENT, RFC 4549 §4.2.3),
expunges as UID EXPUNGE of exactly the messages meant (never a bare EXPUNGE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from imapproxy.message import header_value
from imapproxy.notify import MailboxChange
from imapproxy.protocol import FetchAttribute, SearchKey, SequenceSet, Value, parse_datetime
from imapproxy.store import Tx, cache, mailboxes, messages
from imapproxy.store.mailboxes import Mailbox
from imapproxy.sync.mailboxes import add_message, flags_of
from imapproxy.types import UID, AccountId, BlobId, MailboxId, UpstreamUID
from imapproxy.upstream.client import UpstreamClient, as_int, text
from imapproxy.upstream.errors import UpstreamRefused

Pairs = Sequence[Sequence[int]]
STORED_ITEMS = (
    FetchAttribute("FLAGS"),
    FetchAttribute("INTERNALDATE"),
    FetchAttribute("RFC822.SIZE"),
)  # [[local uid, upstream uid], ...]


def upstream_set(pairs: Pairs) -> SequenceSet:
    return SequenceSet.from_ints(up for _, up in pairs)


def _mailbox(tx: Tx, account: AccountId, mailbox_id: int) -> Mailbox | None:
    return mailboxes.get(tx, account, MailboxId(mailbox_id))


class Operation:
    name: ClassVar[str]

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args

    def load(self, tx: Tx, account: AccountId) -> None:
        """Read from the replica what send needs beyond args (e.g. an APPEND's message)."""

    def discard(self, tx: Tx, account: AccountId) -> None:
        """The entry is dropped and its client told: release what only it used."""

    async def send(self, client: UpstreamClient) -> Any:
        raise NotImplementedError

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        raise NotImplementedError


class StoreFlags(Operation):
    """args: mailbox, name, groups: [[add flags, remove flags, pairs], ...]."""

    name = "store"

    async def send(self, client: UpstreamClient) -> None:
        await client.ensure_selected(self.args["name"], writable=True)
        for add, remove, pairs in self.args["groups"]:
            if add:
                await client.store(upstream_set(pairs), "+", tuple(add))
            if remove:
                await client.store(upstream_set(pairs), "-", tuple(remove))

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[dict[UID, tuple[str, ...]], list[MailboxChange]]:
        mailbox = _mailbox(tx, account, self.args["mailbox"])
        if mailbox is None:
            return {}, []
        updated: dict[UID, tuple[str, ...]] = {}
        for add, remove, pairs in self.args["groups"]:
            for uid, _ in pairs:
                message = messages.get(tx, account, mailbox.id, UID(uid))
                if message is None:
                    continue  # expunged meanwhile: RFC 4549 says ignore
                removed = {f.upper() for f in remove}
                flags = [f for f in message.flags if f.upper() not in removed]
                present = {f.upper() for f in flags}
                flags += [f for f in add if f.upper() not in present]
                if tuple(flags) != message.flags:
                    mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
                    messages.put(
                        tx, account, mailbox.id, message.with_(flags=tuple(flags), modseq=modseq)
                    )
                    mailboxes.log_change(tx, mailbox, modseq, {"uid": uid, "what": "flags"})
                updated[UID(uid)] = tuple(flags)
        mailboxes.put(tx, mailbox)
        return updated, [MailboxChange(mailbox.id, flags=tuple(updated), origin=origin)]


class CopyMessages(Operation):
    """args: source, source_name, target, target_name, pairs, move."""

    name = "copy"

    async def send(self, client: UpstreamClient) -> Any:
        move = bool(self.args["move"])
        await client.ensure_selected(self.args["source_name"], writable=move)
        uids = upstream_set(self.args["pairs"])
        if move and self.args.get("in_doubt"):
            # A MOVE that may have happened: what left the source moved; move the rest.
            # (Without COPYUID for the moved part, the target's next sync brings it in.)
            present = await client.search_uids(uids)
            if not present:
                return None
            uids = SequenceSet.from_ints(sorted(present))
        if move and not client.has("MOVE"):
            copyuid = await client.copy(uids, self.args["target_name"])
            await client.store(uids, "+", ("\\Deleted",))
            await client.expunge(uids)
            return copyuid
        return await client.copy(uids, self.args["target_name"], move=move)

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        source = _mailbox(tx, account, self.args["source"])
        target = _mailbox(tx, account, self.args["target"])
        changes: list[MailboxChange] = []
        copied: list[tuple[UID, UID]] = []
        if target is not None and answer is not None:
            validity, up_sources, up_targets = answer
            if target.upstream_uidvalidity in (None, validity) and source is not None:
                by_upstream = dict(zip(up_sources, up_targets, strict=True))
                if target.upstream_uidvalidity is None:
                    target = target.with_(upstream_uidvalidity=validity)
                for uid, up in self.args["pairs"]:
                    message = messages.get(tx, account, source.id, UID(uid))
                    new_up = by_upstream.get(up)
                    if message is None or new_up is None:
                        continue
                    if messages.local_uid(tx, account, target.id, new_up) is not None:
                        continue
                    target, copy = add_message(
                        tx,
                        target,
                        UpstreamUID(new_up),
                        message.flags,
                        message.internaldate,
                        message.size,
                        message.blob,
                    )
                    copied.append((message.uid, copy.uid))
                mailboxes.put(tx, target)
                changes.append(MailboxChange(target.id, added=bool(copied), origin=None))
        expunged: list[UID] = []
        if self.args["move"] and source is not None:
            # Re-read: when source is target (MOVE into the same mailbox) its record has
            # just moved on (UIDNEXT, modseq); the old snapshot would roll it back.
            source = _mailbox(tx, account, source.id) or source
            source, expunged = _remove(tx, account, source, self.args["pairs"])
            changes.append(MailboxChange(source.id, expunged=tuple(expunged), origin=origin))
        validity = target.uidvalidity if target is not None else 0
        return (validity, copied, expunged), changes


def _remove(
    tx: Tx, account: AccountId, mailbox: Mailbox, pairs: Pairs
) -> tuple[Mailbox, list[UID]]:
    removed = []
    for uid, _ in pairs:
        message = messages.get(tx, account, mailbox.id, UID(uid))
        if message is not None:
            messages.remove(tx, account, mailbox.id, message)
            mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
            mailboxes.log_change(tx, mailbox, modseq, {"uid": uid, "what": "expunge"})
            removed.append(UID(uid))
    mailboxes.put(tx, mailbox)
    return mailbox, removed


class ExpungeMessages(Operation):
    """args: mailbox, name, pairs — exactly the messages this client expunged."""

    name = "expunge"

    async def send(self, client: UpstreamClient) -> None:
        await client.ensure_selected(self.args["name"], writable=True)
        await client.expunge(upstream_set(self.args["pairs"]))

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[list[UID], list[MailboxChange]]:
        mailbox = _mailbox(tx, account, self.args["mailbox"])
        if mailbox is None:
            return [], []
        mailbox, removed = _remove(tx, account, mailbox, self.args["pairs"])
        return removed, [MailboxChange(mailbox.id, expunged=tuple(removed), origin=origin)]


class AppendMessage(Operation):
    """args: mailbox, name, blob (the message, already in the cache), flags, date, size."""

    name = "append"

    message: bytes | bytearray | None = None

    def load(self, tx: Tx, account: AccountId) -> None:
        self.message = cache.get(tx, account, BlobId(self.args["blob"]), cache.Kind.FULL)

    def discard(self, tx: Tx, account: AccountId) -> None:
        cache.delete(tx, account, BlobId(self.args["blob"]), cache.Kind.FULL)

    async def send(self, client: UpstreamClient) -> Any:
        if self.message is None:
            raise UpstreamRefused("NO", None, "queued APPEND lost its message data")
        if self.args.get("in_doubt"):
            # An earlier attempt may have landed: look for it before appending again
            # (RFC 4549 §4.2.2.5: by a unique header, and only an unambiguous match).
            found = await self._find_earlier_attempt(client)
            if found is not None:
                return found
        date = parse_datetime(self.args["date"]) if self.args.get("date") else None
        appenduid = await client.append(
            self.args["name"], tuple(self.args["flags"]), date, self.message
        )
        if appenduid is None:
            return None
        validity, up_uid = appenduid
        # The upstream chose INTERNALDATE (when none was given) and may have refused
        # some flags: read back what it stored, so the replica equals it.
        await client.ensure_selected(self.args["name"])
        return validity, up_uid, await self._stored(client, up_uid)

    async def _stored(self, client: UpstreamClient, up_uid: int) -> dict[str, Value] | None:
        items = await client.fetch(SequenceSet(((up_uid, up_uid),)), STORED_ITEMS)
        return items[0] if items else None

    async def _find_earlier_attempt(self, client: UpstreamClient) -> Any:
        assert self.message is not None
        message_id = header_value(bytes(self.message[:65536]), b"Message-ID")
        if message_id is None:
            return None
        info = await client.select(self.args["name"], readonly=True)
        key = SearchKey("AND", (SearchKey("HEADER", (b"Message-ID", message_id)),))
        candidates = await client.search(key)
        if len(candidates) != 1:
            return None
        [up_uid] = candidates
        stored = await self._stored(client, up_uid)
        if stored is None or as_int(stored.get("RFC822.SIZE")) != len(self.message):
            return None
        return info.uidvalidity, up_uid, stored

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        mailbox = _mailbox(tx, account, self.args["mailbox"])
        if mailbox is None or answer is None or answer[2] is None:
            return None, []
        validity, up_uid, item = answer
        if mailbox.upstream_uidvalidity not in (None, validity):
            return None, []
        if mailbox.upstream_uidvalidity is None:
            mailbox = mailbox.with_(upstream_uidvalidity=validity)
        if messages.local_uid(tx, account, mailbox.id, up_uid) is not None:
            return None, []
        mailbox, message = add_message(
            tx,
            mailbox,
            UpstreamUID(up_uid),
            flags_of(item.get("FLAGS", ())),
            text(item.get("INTERNALDATE")),
            as_int(item.get("RFC822.SIZE")) or self.args["size"],
            BlobId(self.args["blob"]),
        )
        mailboxes.put(tx, mailbox)
        return (mailbox.uidvalidity, message.uid), [MailboxChange(mailbox.id, added=True)]


class CreateMailbox(Operation):
    name = "create"

    async def send(self, client: UpstreamClient) -> None:
        await client.create(self.args["name"])

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        if mailboxes.find(tx, account, self.args["name"]) is None:
            mailboxes.create(tx, account, self.args["name"], delimiter=self.args.get("delimiter"))
        return None, []


class DeleteMailbox(Operation):
    name = "delete"

    async def send(self, client: UpstreamClient) -> None:
        await client.delete(self.args["name"])

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        mailbox = mailboxes.find(tx, account, self.args["name"])
        if mailbox is None:
            return None, []
        mailboxes.delete(tx, mailbox)
        return None, [MailboxChange(mailbox.id, deleted=True)]


class RenameMailbox(Operation):
    """Renames in place (children too), so the replica keeps its messages and UIDs."""

    name = "rename"

    async def send(self, client: UpstreamClient) -> None:
        await client.rename(self.args["old"], self.args["new"])

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        old, new = self.args["old"], self.args["new"]
        if old.upper() == "INBOX":
            return (
                None,
                [],
            )  # INBOX rename moves its messages; the next list/mailbox sync applies it
        for mailbox in mailboxes.all_mailboxes(tx, account):
            delimiter = mailbox.delimiter or ""
            if mailbox.name == old:
                mailboxes.put(tx, mailbox.with_(name=new))
            elif delimiter and mailbox.name.startswith(old + delimiter):
                mailboxes.put(tx, mailbox.with_(name=new + mailbox.name[len(old) :]))
        return None, []


class SetSubscription(Operation):
    name = "subscribe"

    async def send(self, client: UpstreamClient) -> None:
        await client.subscribe(self.args["name"], bool(self.args["subscribed"]))

    def apply(
        self, tx: Tx, account: AccountId, answer: Any, origin: object | None
    ) -> tuple[Any, list[MailboxChange]]:
        mailbox = mailboxes.find(tx, account, self.args["name"])
        if mailbox is not None:
            mailboxes.put(tx, mailbox.with_(subscribed=bool(self.args["subscribed"])))
        return None, []


OPERATIONS: dict[str, type[Operation]] = {
    op.name: op
    for op in (
        StoreFlags,
        CopyMessages,
        ExpungeMessages,
        AppendMessage,
        CreateMailbox,
        DeleteMailbox,
        RenameMailbox,
        SetSubscription,
    )
}
