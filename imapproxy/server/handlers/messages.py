"""Commands that change messages: STORE, COPY, MOVE, EXPUNGE, APPEND.

Each becomes one outbox operation naming its messages by local (and, when known,
upstream) UID. The outbox applies it to the replica at once and queues it; the
client hears the result in our own UID space (COPYUID/APPENDUID), online after the
upstream confirmed within a short wait, or the upstream's refusal if it came in time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from functools import partial

from imapproxy import protocol as p
from imapproxy.outbox.operations import (
    AppendMessage,
    CopyMessages,
    ExpungeMessages,
    FlagChange,
    StoreFlags,
)
from imapproxy.outbox.refs import Ref, ref_of
from imapproxy.outbox.replica import is_local, now_internaldate
from imapproxy.server import condstore, replies
from imapproxy.server.handlers.general import ok
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import SELECTED, Session, handles
from imapproxy.server.view import SelectedView
from imapproxy.store import cache, messages
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.types import UID

SYSTEM = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}


def canonical_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """System flags in their usual spelling; \\Recent cannot be set (RFC 3501 §2.3.2)."""
    out: list[str] = []
    for flag in flags:
        if flag.startswith("\\"):
            if flag.upper() == "\\RECENT":
                continue
            if flag.upper() not in SYSTEM:
                raise CommandFailed(f"unknown system flag {flag}", status="BAD")
            flag = SYSTEM[flag.upper()]
        if flag not in out:
            out.append(flag)
    return tuple(out)


def _targets(
    session: Session, view: SelectedView, sequence_set: p.SequenceSet, by_uid: bool
) -> list[Message]:
    pairs = view.resolve(sequence_set, by_uid)
    mailbox = view.mailbox
    return session.account.store.read(
        lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, [uid for _, uid in pairs])
    )


def _writable(view: SelectedView) -> None:
    if view.readonly:
        raise CommandFailed("mailbox is read-only", response_code=replies.code("READ-ONLY"))


def _refs(
    session: Session, targets: Iterable[Message], with_message_id: bool = False
) -> tuple[Ref, ...]:
    account = session.account.account.id
    return session.account.store.read(
        lambda tx: tuple(ref_of(tx, account, m, with_message_id) for m in targets)
    )


def flag_change(
    session: Session,
    mailbox: Mailbox,
    targets: Iterable[Message],
    mode: str,
    flags: tuple[str, ...],
) -> StoreFlags | None:
    """The STORE operation for targets: per message, the difference the user made
    (replayed as +FLAGS/-FLAGS, RFC 4549 §4.2.3); None when nothing changes."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Message]] = defaultdict(list)
    wanted = {f.upper() for f in flags}
    for message in targets:
        have = {f.upper(): f for f in message.flags}
        add: tuple[str, ...]
        remove: tuple[str, ...]
        if mode == "+":
            add, remove = tuple(f for f in flags if f.upper() not in have), ()
        elif mode == "-":
            add, remove = (), tuple(have[f.upper()] for f in flags if f.upper() in have)
        else:
            add = tuple(f for f in flags if f.upper() not in have)
            remove = tuple(f for key, f in have.items() if key not in wanted)
        if add or remove:
            groups[(add, remove)].append(message)
    if not groups:
        return None
    changes = tuple(
        FlagChange(add, remove, _refs(session, group)) for (add, remove), group in groups.items()
    )
    return StoreFlags(mailbox.id, mailbox.name, mailbox.upstream_uidvalidity, changes)


@handles(p.Store, SELECTED)
async def store(session: Session, cmd: p.Store) -> list[bytes]:
    view = session.selected
    _writable(view)
    if cmd.unchangedsince is not None:
        session.send(condstore.enable_condstore(session.modes, view))
    flags = canonical_flags(cmd.flags)
    targets = _targets(session, view, cmd.sequence_set, cmd.uid)
    failed: list[Message] = []
    if cmd.unchangedsince is not None:
        # RFC 7162 §3.1.3: a message changed after the client's modseq is left alone
        # and named in MODIFIED. Checked and applied with no wait in between.
        limit = cmd.unchangedsince
        failed = [m for m in targets if m.modseq > limit]
        targets = [m for m in targets if m.modseq <= limit]
    operation = flag_change(session, view.mailbox, targets, cmd.mode, flags)
    if operation is not None:
        await session.account.outbox.perform(operation, origin=session)
    tell = not cmd.silent or cmd.unchangedsince is not None
    if tell or failed:
        mailbox = view.mailbox
        wanted = sorted(m.uid for m in targets + failed)
        current = session.account.store.read(
            lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, wanted)
        )
        view.forget_flag_news(m.uid for m in current)
        failed_uids = {m.uid for m in failed}
        session.send(view.keyword_news(m.flags for m in current))
        if session.modes.condstore:
            session.send(view.modseq_guard())
        for message in current:
            seq = view.seq(message.uid)
            if seq is not None and (tell or message.uid in failed_uids):
                # Silent and conditional: MODSEQ only; a failed one shows its flags
                # (RFC 7162 §3.1.3, example 10), so the client need not ask.
                with_flags = not cmd.silent or message.uid in failed_uids
                session.send(view.fetch_flags(seq, message, flags=with_flags))
    code = None
    if failed:
        numbers = (m.uid if cmd.uid else view.seq(m.uid) for m in failed)
        modified = p.SequenceSet.from_ints(n for n in numbers if n is not None)
        code = replies.code("MODIFIED", p.Atom(str(modified)))
    return ok(session, cmd.tag, "STORE completed", code, allow_expunge=False)


async def _target_mailbox(session: Session, name: str) -> Mailbox:
    target = await session.account.find_mailbox(name)
    if target is None or not target.selectable:
        raise CommandFailed("no such mailbox", response_code=replies.code("TRYCREATE"))
    if is_local(target):
        raise CommandFailed(
            f"{target.name} is a local folder of imapproxy for recovered messages",
            response_code=replies.code("CANNOT"),
        )
    return target


async def _copy(session: Session, cmd: p.Copy | p.Move, move: bool) -> list[bytes]:
    view = session.selected
    if move:
        _writable(view)
    target = await _target_mailbox(session, cmd.mailbox)
    targets = _targets(session, view, cmd.sequence_set, cmd.uid)
    name = "MOVE" if move else "COPY"
    if not targets:
        return ok(session, cmd.tag, f"{name} completed (nothing to do)", allow_expunge=move)
    source = view.mailbox
    if is_local(source):
        validity, copied = await _append_copies(session, source, target, targets, move)
    else:
        operation = CopyMessages(
            source.id,
            source.name,
            source.upstream_uidvalidity,
            target.id,
            target.name,
            target.upstream_uidvalidity,
            target.upstream_uidnext,
            move,
            _refs(session, targets, with_message_id=True),
        )
        validity, copied, _ = await session.account.outbox.perform(operation, origin=session)
    code = None
    if copied:
        sources = p.SequenceSet.from_ints(s for s, _ in copied)
        dests = p.SequenceSet.from_ints(d for _, d in copied)
        code = replies.code("COPYUID", validity, p.Atom(str(sources)), p.Atom(str(dests)))
    if move:
        # RFC 6851: COPYUID comes untagged, then the EXPUNGEs, then the tagged OK.
        if code is not None:
            session.send(replies.untagged_status("OK", "moved", code))
        session.send(session.updates(allow_expunge=True))
        moved = _modseq_code(session, view)
        return replies.tagged(cmd.tag, "OK", "MOVE completed", moved)
    return ok(session, cmd.tag, "COPY completed", code)


async def _append_copies(
    session: Session, source: Mailbox, target: Mailbox, targets: list[Message], move: bool
) -> tuple[int, list[tuple[int, int]]]:
    """Out of a local folder (Recovered), a copy is a new message upstream: an APPEND
    of the cached content. A move also removes it from the local folder."""
    account = session.account.account.id
    copied: list[tuple[int, int]] = []
    validity = target.uidvalidity
    for message in targets:
        data = session.account.store.read(
            partial(cache.get, account=account, blob=message.blob, kind=cache.Kind.FULL)
        )
        if data is None:
            continue
        operation = AppendMessage(
            target.id, target.name, message.flags, message.internaldate, len(data), data=data
        )
        validity, uid = await session.account.outbox.perform(operation, origin=session)
        copied.append((message.uid, uid))
    if move and copied:
        moved = {uid for uid, _ in copied}
        refs = _refs(session, [m for m in targets if m.uid in moved])
        await session.account.outbox.perform(
            ExpungeMessages(source.id, source.name, None, refs), origin=session
        )
    return validity, copied


@handles(p.Copy, SELECTED)
async def copy(session: Session, cmd: p.Copy) -> list[bytes]:
    return await _copy(session, cmd, move=False)


@handles(p.Move, SELECTED)
async def move(session: Session, cmd: p.Move) -> list[bytes]:
    return await _copy(session, cmd, move=True)


async def expunge_deleted(
    session: Session, view: SelectedView, only: p.SequenceSet | None, announce: bool
) -> bool:
    """Expunge this view's \\Deleted messages (within only, for UID EXPUNGE) — and no others."""
    mailbox = view.mailbox
    if only is not None:
        candidates = _targets(session, view, only, True)
    else:
        candidates = session.account.store.read(
            lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, list(view.uids))
        )
    doomed = [m for m in candidates if "\\DELETED" in {f.upper() for f in m.flags}]
    if not doomed:
        return False
    operation = ExpungeMessages(
        mailbox.id, mailbox.name, mailbox.upstream_uidvalidity, _refs(session, doomed)
    )
    await session.account.outbox.perform(operation, origin=session)
    if announce:
        session.send(session.updates(allow_expunge=True))
    return True


def _modseq_code(session: Session, view: SelectedView) -> p.ResponseCode | None:
    """HIGHESTMODSEQ for the tagged OK of an EXPUNGE or MOVE that removed messages
    (RFC 7162 §3.2.7, §3.2.9; RFC 6851 §4.4); never for CLOSE (§3.2.8)."""
    if not session.modes.qresync:
        return None
    return replies.code("HIGHESTMODSEQ", condstore.highestmodseq(view))


@handles(p.Expunge, SELECTED)
async def expunge(session: Session, cmd: p.Expunge) -> list[bytes]:
    view = session.selected
    _writable(view)
    removed = await expunge_deleted(session, view, cmd.uids, announce=True)
    code = _modseq_code(session, view) if removed else None
    return ok(session, cmd.tag, "EXPUNGE completed", code)


class AppendInProgress:
    """An APPEND's message as it streams in: one buffer, sized once, no re-copies."""

    def __init__(self, start: p.AppendStart) -> None:
        self.start = start
        self.buffer = bytearray(start.size)
        self.filled = 0

    def add(self, data: bytes) -> None:
        end = self.filled + len(data)
        self.buffer[self.filled : end] = data
        self.filled = end


def check_append(pending: AppendInProgress) -> None:
    """Refuse a message that cannot be appended as it came (BAD, nothing stored)."""
    if pending.filled != pending.start.size:
        raise CommandFailed("APPEND message was cut short", status="BAD")
    if pending.start.binary:
        raise CommandFailed("BINARY APPEND is not supported", status="BAD")


async def append_target(session: Session, name: str) -> Mailbox:
    return await _target_mailbox(session, name)


def append_operation(pending: AppendInProgress, target: Mailbox) -> AppendMessage:
    """The outbox operation for one streamed message (its buffer handed over)."""
    start = pending.start
    flags = canonical_flags(start.flags or ())
    date = (
        p.format_datetime(start.internal_date)
        if start.internal_date is not None
        else now_internaldate()
    )
    # Immutable from here on (the replica, the structure builder and the upstream all
    # take bytes); the receive buffer goes at once, so one copy stays in memory.
    message = bytes(pending.buffer)
    pending.buffer = bytearray()
    return AppendMessage(target.id, target.name, flags, date, len(message), data=message)


async def append(session: Session, pending: AppendInProgress) -> list[bytes]:
    start = pending.start
    check_append(pending)
    target = await _target_mailbox(session, start.mailbox)
    operation = append_operation(pending, target)
    validity, uid = await session.account.outbox.perform(operation, origin=session)
    code = replies.code("APPENDUID", validity, UID(uid))
    return ok(session, start.tag, "APPEND completed", code, allow_expunge=session.view is not None)
