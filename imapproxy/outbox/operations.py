"""Message operations: STORE, COPY/MOVE, EXPUNGE, APPEND (see base.py for the life cycle).

Replay follows RFC 4549: flags go as ``+FLAGS.SILENT``/``-FLAGS.SILENT`` of the
difference the user made (§4.2.3), with UNCHANGEDSINCE where the upstream has
CONDSTORE, so a change made elsewhere meanwhile is kept (the rule: ``flags.py``);
expunges as ``UID EXPUNGE`` of exactly the messages the user expunged (§4.2.4);
COPY/MOVE/APPEND are linked to the upstream UIDs they created (COPYUID/APPENDUID, or
found by identity), so nothing is downloaded again and clients keep their UIDs.
UIDs are checked against the upstream UIDVALIDITY they were captured under; when it
changed, messages are re-matched by identity, never acted on by their old UID.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

from imapproxy.message import header_value
from imapproxy.notify import MailboxChange
from imapproxy.outbox import flags, replica
from imapproxy.outbox.base import Operation
from imapproxy.outbox.refs import Ref, find, resolve
from imapproxy.protocol import SequenceSet, parse_datetime
from imapproxy.store import Tx, cache, mailboxes, messages, outbox
from imapproxy.store.mailboxes import Mailbox
from imapproxy.sync.content import keep_local_structure
from imapproxy.types import UID, AccountId, MailboxId
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import UpstreamRefused

log = logging.getLogger(__name__)

Resolved = list[tuple[Ref, int | None, int]]


async def select(client: UpstreamClient, name: str, writable: bool = False) -> int | None:
    """Select name upstream (if not already) and return its UIDVALIDITY."""
    if client.selected_validity is None:
        client.selected = None
    await client.ensure_selected(name, writable=writable)
    return client.selected_validity


async def upstream_uids(
    client: UpstreamClient, validity: int | None, resolved: Resolved
) -> dict[int, int]:
    """{ref.uid: upstream uid} in the selected mailbox. UIDs captured under another
    UIDVALIDITY are re-matched by identity (INTERNALDATE, size, Message-ID); what does
    not match unambiguously is left out, never guessed."""
    out: dict[int, int] = {}
    stale = []
    for ref, ref_validity, up in resolved:
        if ref_validity is None or validity is None or ref_validity == validity:
            out[ref.uid] = up
        else:
            stale.append(ref)
    if stale:
        found = await find(client, stale)
        log.info(
            "UIDVALIDITY changed: re-matched %d of %d queued message(s)", len(found), len(stale)
        )
        out.update(found)
    return out


def _set(uids: Sequence[int]) -> SequenceSet:
    return SequenceSet.from_ints(sorted(set(uids)))


def _mailbox(tx: Tx, account: AccountId, mailbox_id: int) -> Mailbox | None:
    return mailboxes.get(tx, account, MailboxId(mailbox_id))


def _restore(
    tx: Tx, account: AccountId, mailbox_id: int, refs: Sequence[Ref]
) -> list[MailboxChange]:
    """Bring back messages removed locally whose removal the upstream refused (with new
    local UIDs: a UID the client saw expunged is never reused)."""
    mailbox = _mailbox(tx, account, mailbox_id)
    if mailbox is None:
        return []
    added = False
    for ref in refs:
        up = ref.upstream
        if up is None:
            link = outbox.link(tx, account, mailbox.id, ref.uid)
            up = None if link is None else link[1]
        if up is not None and messages.local_uid(tx, account, mailbox.id, up) is not None:
            continue
        mailbox, _ = replica.add(tx, mailbox, up, ref.flags, ref.date, ref.size, ref.blob)
        added = True
    mailboxes.put(tx, mailbox)
    return [MailboxChange(mailbox.id, added=added)]


def _is_local(tx: Tx, account: AccountId, mailbox_id: int) -> bool:
    mailbox = _mailbox(tx, account, mailbox_id)
    return mailbox is not None and replica.is_local(mailbox)


# -- STORE -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagChange:
    add: tuple[str, ...]
    remove: tuple[str, ...]
    refs: tuple[Ref, ...]

    def to_json(self) -> list[Any]:
        return [list(self.add), list(self.remove), [r.to_json() for r in self.refs]]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> FlagChange:
        add, remove, refs = data
        return cls(tuple(add), tuple(remove), tuple(Ref.from_json(r) for r in refs))


@dataclass(frozen=True)
class StoreFlags(Operation):
    """Flag deltas on messages of one mailbox (replayed by ``flags.replay``: the rule that
    keeps a change made on another device meanwhile is documented there)."""

    mailbox: int
    mailbox_name: str
    validity: int | None
    changes: tuple[FlagChange, ...]
    #: The upstream HIGHESTMODSEQ the replica knew when the user acted (set when queued):
    #: the UNCHANGEDSINCE of the replay. None without CONDSTORE or before the first sync.
    modseq: int | None = None

    name = "store"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            data["mailbox"],
            data["mailbox_name"],
            data["validity"],
            tuple(FlagChange.from_json(c) for c in data["changes"]),
            data.get("modseq"),
        )

    @classmethod
    def batch(cls, operations: Sequence[StoreFlags]) -> StoreFlags:
        """Several entries of one mailbox (same UIDVALIDITY, distinct messages) as one
        operation: their deltas go up together, one STORE per distinct delta. The lowest
        modseq is the UNCHANGEDSINCE of all (a lower one can only report more messages
        as changed, which the merge resolves; a higher one could miss a change)."""
        first = operations[0]
        modseqs = [op.modseq for op in operations]
        return replace(
            first,
            changes=tuple(c for op in operations for c in op.changes),
            modseq=None if None in modseqs else min(m for m in modseqs if m is not None),
        )

    def batches_with(self, other: Operation) -> bool:
        """Whether other can join a batch with this one (same mailbox and UIDVALIDITY)."""
        return isinstance(other, StoreFlags) and (
            other.mailbox,
            other.mailbox_name,
            other.validity,
        ) == (self.mailbox, self.mailbox_name, self.validity)

    def local_uids(self) -> set[int]:
        return {ref.uid for change in self.changes for ref in change.refs}

    def mailboxes(self) -> set[MailboxId]:
        return {MailboxId(self.mailbox)}

    def upstream_free(self, tx: Tx, account: AccountId) -> bool:
        return _is_local(tx, account, self.mailbox)

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        mailbox = _mailbox(tx, account, self.mailbox)
        known = None if mailbox is None else mailbox.upstream_highestmodseq
        done = replace(self, modseq=known)
        return done, None, self._apply(tx, account, origin, undo=False)

    def _apply(
        self, tx: Tx, account: AccountId, origin: object | None, undo: bool
    ) -> list[MailboxChange]:
        mailbox = _mailbox(tx, account, self.mailbox)
        if mailbox is None:
            return []
        changed: list[UID] = []
        for change in self.changes:
            add, remove = (change.remove, change.add) if undo else (change.add, change.remove)
            for ref in change.refs:
                message = messages.get(tx, account, mailbox.id, UID(ref.uid))
                if message is None:
                    continue  # expunged meanwhile: RFC 4549 §5.1 says ignore
                new_flags = replica.apply_delta(message.flags, add, remove)
                if new_flags != message.flags:
                    mailbox = replica.set_flags(tx, mailbox, message, new_flags)
                    changed.append(message.uid)
        mailboxes.put(tx, mailbox)
        return [MailboxChange(mailbox.id, flags=tuple(changed), origin=origin)]

    def plan(self, tx: Tx, account: AccountId) -> list[tuple[FlagChange, Resolved]]:
        return [
            (change, resolve(tx, account, self.mailbox, self.validity, change.refs))
            for change in self.changes
        ]

    async def send(
        self, client: UpstreamClient, plan: list[tuple[FlagChange, Resolved]], in_doubt: bool
    ) -> dict[int, tuple[str, ...]]:
        """Returns {local uid: upstream flags} of messages changed upstream meanwhile."""
        plan = [(change, resolved) for change, resolved in plan if resolved]
        if not plan:
            return {}  # only messages that never reached the upstream
        try:
            validity = await select(client, self.mailbox_name, writable=True)
        except UpstreamRefused as exc:
            log.info("flags on %s not replayed, mailbox gone upstream: %s", self.mailbox_name, exc)
            return {}
        deltas = []
        renumbered = False
        for change, resolved in plan:
            ups = await upstream_uids(client, validity, resolved)
            renumbered |= any(v not in (None, validity) for _, v, _ in resolved)
            targets = tuple(
                flags.Target(ref.uid, ups[ref.uid], ref.flags)
                for ref, _, _ in resolved
                if ref.uid in ups
            )
            if targets:
                deltas.append(flags.Delta(change.add, change.remove, targets))
        # A modseq of another UIDVALIDITY means nothing now (its messages were re-matched).
        since = None if renumbered or validity != self.validity else self.modseq
        return await flags.replay(client, deltas, since)

    def link_answer(
        self, tx: Tx, account: AccountId, plan: Any, answer: Any
    ) -> list[MailboxChange]:
        """Messages changed upstream meanwhile: the replica takes the other device's
        changes (the flags the user did not change here), so it equals the upstream."""
        if not answer:
            return []
        mailbox = _mailbox(tx, account, self.mailbox)
        if mailbox is None:
            return []
        changed: list[UID] = []
        for change in self.changes:
            for ref in change.refs:
                upstream = answer.get(ref.uid) if isinstance(answer, dict) else None
                message = None
                if upstream is not None:
                    message = messages.get(tx, account, mailbox.id, UID(ref.uid))
                if message is None or upstream is None:
                    continue
                added, removed = flags.user_changes(ref.flags, change.add, change.remove)
                mine = set(added) | set(removed)
                base = {f.upper() for f in ref.flags}
                now = {f.upper() for f in upstream}
                theirs_add = [f for f in upstream if f.upper() not in base | mine]
                theirs_remove = [f for f in ref.flags if f.upper() not in now | mine]
                result = replica.apply_delta(message.flags, theirs_add, theirs_remove)
                if result != message.flags:
                    mailbox = replica.set_flags(tx, mailbox, message, result)
                    changed.append(message.uid)
        mailboxes.put(tx, mailbox)
        return [MailboxChange(mailbox.id, flags=tuple(changed))] if changed else []

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        return self._apply(tx, account, None, undo=True)

    def describe(self) -> str:
        count = sum(len(c.refs) for c in self.changes)
        return f"flag change on {count} message(s) in {self.mailbox_name}"


# -- COPY / MOVE ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyMessages(Operation):
    source: int
    source_name: str
    source_validity: int | None
    target: int
    target_name: str
    #: The target's upstream UIDVALIDITY and UIDNEXT when queued: new copies land at or
    #: above that UID, which bounds the search for an in-doubt attempt.
    target_validity: int | None
    target_uidnext: int | None
    move: bool
    refs: tuple[Ref, ...]
    #: The local UIDs of the copies in the target, in refs order.
    copies: tuple[int, ...] = ()

    name = "copy"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            **{
                **data,
                "refs": tuple(Ref.from_json(r) for r in data["refs"]),
                "copies": tuple(data["copies"]),
            }
        )

    def mailboxes(self) -> set[MailboxId]:
        return {MailboxId(self.source), MailboxId(self.target)}

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        target = _mailbox(tx, account, self.target)
        assert target is not None
        copies = []
        for ref in self.refs:
            target, copy = replica.add(tx, target, None, ref.flags, ref.date, ref.size, ref.blob)
            copies.append(int(copy.uid))
        mailboxes.put(tx, target)
        changes = [MailboxChange(target.id, added=True, origin=None)]
        expunged: list[UID] = []
        if self.move:
            source = _mailbox(tx, account, self.source)  # re-read: it may be the target
            if source is not None:
                source, removed = replica.remove(tx, source, [r.uid for r in self.refs])
                mailboxes.put(tx, source)
                expunged = [m.uid for m in removed]
                changes.append(MailboxChange(source.id, expunged=tuple(expunged), origin=origin))
        done = replace(self, copies=tuple(copies))
        pairs = [(ref.uid, copy) for ref, copy in zip(self.refs, copies, strict=True)]
        return done, (target.uidvalidity, pairs, expunged), changes

    def plan(self, tx: Tx, account: AccountId) -> Resolved:
        return resolve(tx, account, self.source, self.source_validity, self.refs)

    async def send(
        self, client: UpstreamClient, plan: Resolved, in_doubt: bool
    ) -> tuple[int | None, dict[int, int]] | None:
        if not plan:
            return None
        validity = await select(client, self.source_name, writable=self.move)
        by_ref = await upstream_uids(client, validity, plan)
        refs = {ref.uid: ref for ref, _, _ in plan if ref.uid in by_ref}
        landed: dict[int, int] = {}
        target_validity: int | None = None
        if in_doubt:
            # An earlier attempt may have executed: what is already in the target (and,
            # for a MOVE, no longer in the source) is not sent again (RFC 4549 §5.1).
            if self.move:
                present = await client.search_uids(_set(list(by_ref.values())))
                maybe_done = [r for u, r in refs.items() if by_ref[u] not in present]
            else:
                maybe_done = list(refs.values())
            if maybe_done:
                target_validity, landed = await self._find_in_target(client, maybe_done)
                if self.move:
                    # Gone from the source and not found in the target: moved, or
                    # deleted elsewhere; either way nothing is left to move.
                    for ref in maybe_done:
                        by_ref.pop(ref.uid, None)
                await select(client, self.source_name, writable=self.move)
            for uid in landed:
                by_ref.pop(uid, None)
        if by_ref:
            uids = _set(list(by_ref.values()))
            if self.move and not client.has("MOVE"):
                answer = await client.copy(uids, self.target_name)
                await client.store(uids, "+", ("\\Deleted",))
                await client.expunge(uids)
            else:
                answer = await client.copy(uids, self.target_name, move=self.move)
            if answer is not None:
                target_validity, sources, dests = answer
                by_upstream = dict(zip(sources, dests, strict=True))
                for ref_uid, up in by_ref.items():
                    if up in by_upstream:
                        landed[ref_uid] = by_upstream[up]
            else:  # no UIDPLUS: find the copies by identity
                target_validity, found = await self._find_in_target(
                    client, [refs[u] for u in by_ref]
                )
                landed.update(found)
        return target_validity, landed

    async def _find_in_target(
        self, client: UpstreamClient, refs: list[Ref]
    ) -> tuple[int | None, dict[int, int]]:
        validity = await select(client, self.target_name)
        since = self.target_uidnext if validity == self.target_validity else None
        return validity, await find(client, refs, since)

    def link_answer(
        self, tx: Tx, account: AccountId, plan: Resolved, answer: Any
    ) -> list[MailboxChange]:
        validity, landed = answer if answer is not None else (None, {})
        changes = []
        orphans = []
        for ref, copy in zip(self.refs, self.copies, strict=True):
            up = landed.get(ref.uid)
            if up is None or validity is None:
                orphans.append(copy)
                continue
            change = replica.link(tx, account, self.target, copy, validity, up)
            if change is not None:
                changes.append(change)
        if orphans:
            # Copies of messages the upstream no longer had (or that never reached it):
            # the replica follows the upstream; their content stays in the cache.
            target = _mailbox(tx, account, self.target)
            if target is not None:
                target, removed = replica.remove(tx, target, orphans)
                mailboxes.put(tx, target)
                if removed:
                    log.info(
                        "%d copied message(s) not found upstream after %s", len(removed), self.name
                    )
                changes.append(MailboxChange(target.id, expunged=tuple(m.uid for m in removed)))
        return changes

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        changes = []
        target = _mailbox(tx, account, self.target)
        if target is not None:
            target, removed = replica.remove(tx, target, self.copies)
            mailboxes.put(tx, target)
            changes.append(MailboxChange(target.id, expunged=tuple(m.uid for m in removed)))
        if self.move:
            changes += _restore(tx, account, self.source, self.refs)
        return changes

    def describe(self) -> str:
        verb = "move" if self.move else "copy"
        return (
            f"{verb} of {len(self.refs)} message(s) from {self.source_name} to {self.target_name}"
        )


# -- EXPUNGE ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpungeMessages(Operation):
    """Exactly the messages this client expunged (never a bare EXPUNGE upstream)."""

    mailbox: int
    mailbox_name: str
    validity: int | None
    refs: tuple[Ref, ...]

    name = "expunge"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            data["mailbox"],
            data["mailbox_name"],
            data["validity"],
            tuple(Ref.from_json(r) for r in data["refs"]),
        )

    def mailboxes(self) -> set[MailboxId]:
        return {MailboxId(self.mailbox)}

    def upstream_free(self, tx: Tx, account: AccountId) -> bool:
        return _is_local(tx, account, self.mailbox)

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        mailbox = _mailbox(tx, account, self.mailbox)
        if mailbox is None:
            return self, [], []
        mailbox, removed = replica.remove(tx, mailbox, [r.uid for r in self.refs])
        mailboxes.put(tx, mailbox)
        uids = [m.uid for m in removed]
        return self, uids, [MailboxChange(mailbox.id, expunged=tuple(uids), origin=origin)]

    def plan(self, tx: Tx, account: AccountId) -> Resolved:
        return resolve(tx, account, self.mailbox, self.validity, self.refs)

    async def send(self, client: UpstreamClient, plan: Resolved, in_doubt: bool) -> None:
        if not plan:
            return
        try:
            validity = await select(client, self.mailbox_name, writable=True)
        except UpstreamRefused as exc:
            log.info(
                "expunge in %s not replayed, mailbox gone upstream: %s", self.mailbox_name, exc
            )
            return
        uids = list((await upstream_uids(client, validity, plan)).values())
        if uids:
            await client.expunge(_set(uids))

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        return _restore(tx, account, self.mailbox, self.refs)

    def describe(self) -> str:
        return f"expunge of {len(self.refs)} message(s) in {self.mailbox_name}"


# -- APPEND -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendMessage(Operation):
    mailbox: int
    mailbox_name: str
    flags: tuple[str, ...]
    #: Always set (now, when the client gave none): sent upstream, so the upstream's
    #: copy has the INTERNALDATE the replica shows, and an in-doubt attempt is found.
    date: str
    size: int
    uid: int = 0
    blob: int = 0
    message_id: str | None = None
    validity: int | None = None
    uidnext: int | None = None
    #: The message itself, only until apply_local has put it in the cache.
    data: bytes | bytearray | None = field(default=None, compare=False, repr=False)

    name = "append"

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        del out["data"]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "flags": tuple(data["flags"])})

    def mailboxes(self) -> set[MailboxId]:
        return {MailboxId(self.mailbox)}

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        assert self.data is not None
        mailbox = _mailbox(tx, account, self.mailbox)
        assert mailbox is not None
        blob = cache.new_blob(tx, account)
        cache.put(tx, account, blob, cache.Kind.FULL, self.data)
        # Built now, so the draft FETCHes like any other message before replay.
        keep_local_structure(tx, account, blob, self.data)
        mailbox, message = replica.add(tx, mailbox, None, self.flags, self.date, self.size, blob)
        mailboxes.put(tx, mailbox)
        found = header_value(bytes(self.data[:65536]), b"Message-ID")
        done = replace(
            self,
            uid=int(message.uid),
            blob=int(blob),
            message_id=None if not found else found.decode("utf-8", "replace").strip(),
            validity=mailbox.upstream_uidvalidity,
            uidnext=mailbox.upstream_uidnext,
            data=None,
        )
        return done, (mailbox.uidvalidity, message.uid), [MailboxChange(mailbox.id, added=True)]

    def plan(self, tx: Tx, account: AccountId) -> bytes | None:
        return cache.get(tx, account, self.blob, cache.Kind.FULL)  # type: ignore[arg-type]

    def _ref(self) -> Ref:
        return Ref(self.uid, None, self.date, self.size, self.message_id, self.flags, self.blob)

    async def send(
        self, client: UpstreamClient, plan: bytes | None, in_doubt: bool
    ) -> tuple[int, int] | None:
        if plan is None:
            raise UpstreamRefused("NO", None, "queued APPEND lost its message data")
        if in_doubt:
            # An earlier attempt may have landed: look for it before appending again.
            found = await self._find(client)
            if found is not None:
                return found
        appenduid = await client.append(
            self.mailbox_name, self.flags, parse_datetime(self.date.strip()), plan
        )
        if appenduid is not None:
            return appenduid
        return await self._find(client)  # no UIDPLUS: find it by identity

    async def _find(self, client: UpstreamClient) -> tuple[int, int] | None:
        validity = await select(client, self.mailbox_name)
        since = self.uidnext if validity == self.validity else None
        found = await find(client, [self._ref()], since)
        if validity is None or self.uid not in found:
            return None
        return validity, found[self.uid]

    def link_answer(
        self, tx: Tx, account: AccountId, plan: Any, answer: Any
    ) -> list[MailboxChange]:
        if answer is None:
            # Delivered, but its upstream UID cannot be told: drop our copy, the next
            # sync brings the upstream's (rather than keep two).
            return self.undo(tx, account)
        validity, up = answer
        change = replica.link(tx, account, self.mailbox, self.uid, validity, up)
        return [] if change is None else [change]

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        mailbox = _mailbox(tx, account, self.mailbox)
        if mailbox is None:
            return []
        mailbox, removed = replica.remove(tx, mailbox, [self.uid])
        mailboxes.put(tx, mailbox)
        return [MailboxChange(mailbox.id, expunged=tuple(m.uid for m in removed))]

    def recover(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        return [replica.keep_in_recovered(tx, account, self.blob, self.flags, self.date, self.size)]

    def describe(self) -> str:
        what = f" {self.message_id}" if self.message_id else ""
        return f"new message{what} ({self.size} bytes) in {self.mailbox_name}"
