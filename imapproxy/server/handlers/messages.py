"""Commands that change messages: STORE, COPY, MOVE, EXPUNGE, APPEND.

Each becomes one outbox operation naming its messages by local and upstream UID;
the outbox sends it upstream and applies the answer to the replica, and the client
hears the result (COPYUID/APPENDUID in our own UID space) or the upstream's refusal.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from imapproxy import protocol as p
from imapproxy.outbox.operations import AppendMessage, CopyMessages, ExpungeMessages, StoreFlags
from imapproxy.server import replies
from imapproxy.server.handlers.general import ok
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import SELECTED, Session, handles
from imapproxy.server.view import SelectedView
from imapproxy.store import Tx, cache, messages
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


@handles(p.Store, SELECTED)
async def store(session: Session, cmd: p.Store) -> list[bytes]:
    if cmd.unchangedsince is not None:
        raise CommandFailed("CONDSTORE is not enabled", status="BAD")
    view = session.selected
    _writable(view)
    flags = canonical_flags(cmd.flags)
    targets = _targets(session, view, cmd.sequence_set, cmd.uid)
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[list[int]]] = defaultdict(list)
    wanted = {f.upper() for f in flags}
    for message in targets:
        if message.upstream_uid is None:
            continue
        have = {f.upper(): f for f in message.flags}
        add: tuple[str, ...]
        remove: tuple[str, ...]
        if cmd.mode == "+":
            add, remove = tuple(f for f in flags if f.upper() not in have), ()
        elif cmd.mode == "-":
            add, remove = (), tuple(have[f.upper()] for f in flags if f.upper() in have)
        else:
            add = tuple(f for f in flags if f.upper() not in have)
            remove = tuple(f for key, f in have.items() if key not in wanted)
        if add or remove:
            groups[(add, remove)].append([message.uid, message.upstream_uid])
    if groups:
        args = {
            "mailbox": view.mailbox.id,
            "name": view.mailbox.name,
            "groups": [[list(add), list(remove), pairs] for (add, remove), pairs in groups.items()],
        }
        await session.account.outbox.perform(StoreFlags(args), origin=session)
    if not cmd.silent:
        mailbox = view.mailbox
        current = session.account.store.read(
            lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, [m.uid for m in targets])
        )
        view.forget_flag_news(m.uid for m in current)
        for message in current:
            seq = view.seq(message.uid)
            if seq is not None:
                items = (p.Atom("UID"), message.uid, p.Atom("FLAGS"), replies.atoms(message.flags))
                session.send(replies.untagged("FETCH", items, number=seq))
    return ok(session, cmd.tag, "STORE completed", allow_expunge=False)


async def _copy(session: Session, cmd: p.Copy | p.Move, move: bool) -> list[bytes]:
    view = session.selected
    if move:
        _writable(view)
    target = await session.account.find_mailbox(cmd.mailbox)
    if target is None or not target.selectable:
        raise CommandFailed("no such mailbox", response_code=replies.code("TRYCREATE"))
    targets = [
        m for m in _targets(session, view, cmd.sequence_set, cmd.uid) if m.upstream_uid is not None
    ]
    name = "MOVE" if move else "COPY"
    if not targets:
        return ok(session, cmd.tag, f"{name} completed (nothing to do)", allow_expunge=move)
    args = {
        "source": view.mailbox.id,
        "source_name": view.mailbox.name,
        "target": target.id,
        "target_name": target.name,
        "pairs": [[m.uid, m.upstream_uid] for m in targets],
        "move": move,
    }
    validity, copied, _ = await session.account.outbox.perform(CopyMessages(args), origin=session)
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
        return replies.tagged(cmd.tag, "OK", "MOVE completed")
    return ok(session, cmd.tag, "COPY completed", code)


@handles(p.Copy, SELECTED)
async def copy(session: Session, cmd: p.Copy) -> list[bytes]:
    return await _copy(session, cmd, move=False)


@handles(p.Move, SELECTED)
async def move(session: Session, cmd: p.Move) -> list[bytes]:
    return await _copy(session, cmd, move=True)


async def expunge_deleted(
    session: Session, view: SelectedView, only: p.SequenceSet | None, announce: bool
) -> None:
    """Expunge this view's \\Deleted messages (within only, for UID EXPUNGE) — and no others."""
    mailbox = view.mailbox
    if only is not None:
        candidates = _targets(session, view, only, True)
    else:
        candidates = session.account.store.read(
            lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, list(view.uids))
        )
    doomed = [
        m
        for m in candidates
        if "\\DELETED" in {f.upper() for f in m.flags} and m.upstream_uid is not None
    ]
    if not doomed:
        return
    args = {
        "mailbox": mailbox.id,
        "name": mailbox.name,
        "pairs": [[m.uid, m.upstream_uid] for m in doomed],
    }
    await session.account.outbox.perform(ExpungeMessages(args), origin=session)
    if announce:
        session.send(session.updates(allow_expunge=True))


@handles(p.Expunge, SELECTED)
async def expunge(session: Session, cmd: p.Expunge) -> list[bytes]:
    view = session.selected
    _writable(view)
    await expunge_deleted(session, view, cmd.uids, announce=True)
    return ok(session, cmd.tag, "EXPUNGE completed")


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


def _imap_date(when: datetime | None) -> str | None:
    return None if when is None else p.format_datetime(when).strip()


async def append(session: Session, pending: AppendInProgress) -> list[bytes]:
    start = pending.start
    if pending.filled != start.size:
        raise CommandFailed("APPEND message was cut short", status="BAD")
    if start.binary:
        raise CommandFailed("BINARY APPEND is not supported", status="BAD")
    target: Mailbox | None = await session.account.find_mailbox(start.mailbox)
    if target is None or not target.selectable:
        raise CommandFailed("no such mailbox", response_code=replies.code("TRYCREATE"))
    flags = canonical_flags(start.flags or ())
    message = pending.buffer
    account = session.account.account.id
    operation = AppendMessage(
        {
            "mailbox": target.id,
            "name": target.name,
            "flags": list(flags),
            "date": _imap_date(start.internal_date),
            "size": len(message),
            "blob": 0,
        }
    )

    operation.message = message  # sent from memory; the cache copy is for replay

    def keep_message(tx: Tx) -> None:
        blob = cache.new_blob(tx, account)
        cache.put(tx, account, blob, cache.Kind.FULL, message)
        operation.args["blob"] = blob

    result = await session.account.outbox.perform(operation, origin=session, prepare=keep_message)
    pending.buffer = bytearray()
    code = None
    if result is not None:
        validity, uid = result
        code = replies.code("APPENDUID", validity, UID(uid))
    return ok(session, start.tag, "APPEND completed", code, allow_expunge=session.view is not None)
