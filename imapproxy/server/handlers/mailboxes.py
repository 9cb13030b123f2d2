"""Mailbox commands: LIST/LSUB, STATUS, SELECT/EXAMINE, CLOSE/UNSELECT, CREATE, DELETE,
RENAME, SUBSCRIBE/UNSUBSCRIBE — answered from the replica, changes through the outbox."""

from __future__ import annotations

from imapproxy import protocol as p
from imapproxy.outbox.folders import CreateMailbox, DeleteMailbox, RenameMailbox, SetSubscription
from imapproxy.outbox.replica import is_local
from imapproxy.server import condstore, listing, replies
from imapproxy.server.handlers.general import ok
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import AUTH, SELECTED, Session, handles
from imapproxy.server.view import SelectedView
from imapproxy.store import mailboxes as store_mailboxes
from imapproxy.store.mailboxes import Mailbox, normalize_name

SPECIAL_USE = {
    "\\ALL",
    "\\ARCHIVE",
    "\\DRAFTS",
    "\\FLAGGED",
    "\\JUNK",
    "\\SENT",
    "\\TRASH",
    "\\IMPORTANT",
}


def _mailbox_name(name: str) -> bytes | p.Atom:
    return p.Atom("INBOX") if name == "INBOX" else name.encode()


def _list_line(kind: str, row: listing.Row) -> list[bytes]:
    delimiter = None if row.delimiter is None else row.delimiter.encode()
    return replies.untagged(kind, replies.atoms(row.attributes), delimiter, _mailbox_name(row.name))


@handles(p.List, AUTH)
async def list_(session: Session, cmd: p.List) -> list[bytes]:
    # The client asks for the list: fetch it fresh (offline, the replica's stands).
    await session.account.refresh_mailboxes(force=True)
    boxes = session.account.mailboxes()
    if not boxes:
        # Never an empty list for "unknown": clients delete the folders they no longer see.
        raise _unavailable("the folder list is not in the replica yet; upstream unreachable")
    inbox = next((m for m in boxes if m.name == "INBOX"), None)
    delimiter = (inbox.delimiter if inbox else None) or "/"
    kind = "LSUB" if cmd.lsub else "LIST"
    if cmd.patterns == ("",) and not cmd.lsub:
        # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the reference's root.
        root = listing.root(cmd.reference, delimiter).encode()
        session.send(replies.untagged("LIST", (p.Atom("\\Noselect"),), delimiter.encode(), root))
        return ok(session, cmd.tag, "LIST completed")
    select = {o.upper() for o in cmd.select_options}
    returns = {o.upper() for o in cmd.return_options if isinstance(o, str)}
    patterns = [listing.join(cmd.reference, pat) for pat in cmd.patterns]
    folders = [listing.Folder(m.name, m.delimiter, m.attributes, m.subscribed) for m in boxes]
    if cmd.lsub:
        for row in listing.lsub_rows(folders, patterns):
            session.send(_list_line(kind, row))
        return ok(session, cmd.tag, f"{kind} completed")
    subscribed = {m.name for m in boxes if m.subscribed}
    for row in listing.list_rows(folders, patterns, delimiter):
        if "SUBSCRIBED" in select and row.name not in subscribed:
            continue
        attributes = row.attributes
        if "SPECIAL-USE" in select and not any(a.upper() in SPECIAL_USE for a in attributes):
            continue
        if ("SUBSCRIBED" in select or "SUBSCRIBED" in returns) and row.name in subscribed:
            attributes = (*attributes, "\\Subscribed")
        session.send(_list_line(kind, listing.Row(attributes, row.delimiter, row.name)))
    return ok(session, cmd.tag, f"{kind} completed")


def _unavailable(reason: str) -> CommandFailed:
    return CommandFailed(reason, response_code=replies.code("UNAVAILABLE"))


async def _find(session: Session, name: str) -> Mailbox:
    mailbox = await session.account.find_mailbox(name)
    if mailbox is None:
        if not session.account.mailboxes():
            # Not even the folder list was ever fetched: "no such mailbox" would be a guess.
            raise _unavailable("the folder list is not in the replica yet; upstream unreachable")
        raise CommandFailed("no such mailbox", response_code=replies.code("NONEXISTENT"))
    return mailbox


async def _synced(session: Session, name: str, fresh_enough: bool = False) -> Mailbox:
    """The mailbox brought up to date; offline, as the replica has it. A mailbox whose
    message list the replica never had is refused rather than shown empty: a client
    would take zero messages for the truth and may delete its own copies.

    ``fresh_enough``: a replica that NOTIFY keeps current is taken as it is (STATUS,
    which clients send for every folder). SELECT still asks: a client opening a folder
    is about to act on it, and one round trip buys it the upstream's exact state."""
    mailbox = await _find(session, name)
    if not mailbox.selectable:
        raise CommandFailed("mailbox cannot be selected", response_code=replies.code("NONEXISTENT"))
    synced = await session.account.sync(mailbox, fresh_enough=fresh_enough)
    if not synced.contents_known:
        raise _unavailable(
            f"the messages of {synced.name} are not in the replica yet (never synced); "
            "upstream unreachable"
        )
    return synced


@handles(p.Status, AUTH)
async def status(session: Session, cmd: p.Status) -> list[bytes]:
    mailbox = await _synced(session, cmd.mailbox, fresh_enough=True)
    stats = session.account.stats(mailbox)
    values: dict[str, int] = {
        "MESSAGES": stats.messages,
        "RECENT": session.account.store.read(lambda tx: store_mailboxes.recent_count(tx, mailbox)),
        "UIDNEXT": mailbox.uidnext,
        "UIDVALIDITY": mailbox.uidvalidity,
        "UNSEEN": stats.unseen,
        "SIZE": stats.size,
        "HIGHESTMODSEQ": mailbox.highestmodseq,
    }
    if any(item.upper() == "HIGHESTMODSEQ" for item in cmd.items):
        session.send(condstore.enable_condstore(session.modes, session.view))
    pairs: list[p.Value] = []
    for item in cmd.items:
        if item.upper() not in values:
            raise CommandFailed(f"unsupported STATUS item {item}", status="BAD")
        pairs += [p.Atom(item.upper()), values[item.upper()]]
    session.send(replies.untagged("STATUS", _mailbox_name(mailbox.name), tuple(pairs)))
    return ok(session, cmd.tag, "STATUS completed")


@handles(p.Select, AUTH)
async def select(session: Session, cmd: p.Select) -> list[bytes]:
    if cmd.qresync is not None and not session.modes.qresync:
        raise CommandFailed("QRESYNC needs ENABLE QRESYNC first", status="BAD")
    if session.view is not None:
        # RFC 7162 §3.2.11: the boundary between the old mailbox's responses and the new.
        session.leave_selected()
        session.send(
            replies.untagged_status("OK", "previous mailbox closed", replies.code("CLOSED"))
        )
    if cmd.condstore or cmd.qresync is not None:
        session.modes.condstore = True
    mailbox = await _synced(session, cmd.mailbox)
    view = SelectedView(
        session.account.store, mailbox, cmd.readonly, origin=session, modes=session.modes
    )
    mailbox = view.mailbox
    stats = session.account.stats(mailbox)
    session.send(view.announce_keywords(stats.keywords))
    session.send(replies.untagged("EXISTS", number=len(view.uids)))
    session.send(replies.untagged("RECENT", number=len(view.recent)))
    first_unseen = stats.first_unseen
    if first_unseen is not None:
        session.send(
            replies.untagged_status("OK", "first unseen", replies.code("UNSEEN", first_unseen))
        )
    session.send(
        replies.untagged_status(
            "OK", "UIDs valid", replies.code("UIDVALIDITY", mailbox.uidvalidity)
        )
    )
    session.send(
        replies.untagged_status(
            "OK", "predicted next UID", replies.code("UIDNEXT", mailbox.uidnext)
        )
    )
    if session.modes.condstore:
        code = replies.code("HIGHESTMODSEQ", view.told_modseq)
        session.send(replies.untagged_status("OK", "highest modseq", code))
    if cmd.qresync is not None:
        session.send(condstore.qresync_select(view, cmd.qresync))
    session.enter_selected(view)
    mode = "READ-ONLY" if cmd.readonly else "READ-WRITE"
    return replies.tagged(
        cmd.tag, "OK", f"{'EXAMINE' if cmd.readonly else 'SELECT'} completed", replies.code(mode)
    )


@handles(p.Unselect, SELECTED)
async def unselect(session: Session, cmd: p.Unselect) -> list[bytes]:
    session.leave_selected()
    return replies.tagged(cmd.tag, "OK", "UNSELECT completed")


@handles(p.Close, SELECTED)
async def close(session: Session, cmd: p.Close) -> list[bytes]:
    from imapproxy.server.handlers.messages import expunge_deleted

    view = session.selected
    if not view.readonly:
        await expunge_deleted(session, view, None, announce=False)
    session.leave_selected()
    return replies.tagged(cmd.tag, "OK", "CLOSE completed")


def _valid_new_name(session: Session, name: str) -> str:
    inbox = session.account.mailbox("INBOX")
    delimiter = (inbox.delimiter if inbox else None) or "/"
    name = name[:-1] if name.endswith(delimiter) else name
    if not name:
        raise CommandFailed("empty mailbox name", status="BAD")
    return normalize_name(name)


@handles(p.Create, AUTH)
async def create(session: Session, cmd: p.Create) -> list[bytes]:
    name = _valid_new_name(session, cmd.mailbox)
    if await session.account.find_mailbox(name) is not None:
        raise CommandFailed("mailbox already exists", response_code=replies.code("ALREADYEXISTS"))
    await session.account.outbox.perform(CreateMailbox(name), origin=session)
    return ok(session, cmd.tag, "CREATE completed")


@handles(p.Delete, AUTH)
async def delete(session: Session, cmd: p.Delete) -> list[bytes]:
    mailbox = await _find(session, cmd.mailbox)
    if mailbox.name == "INBOX":
        raise CommandFailed("INBOX cannot be deleted")
    if session.view is not None and session.view.mailbox.id == mailbox.id:
        session.leave_selected()
    await session.account.outbox.perform(DeleteMailbox(mailbox.name, mailbox.id), origin=session)
    return ok(session, cmd.tag, "DELETE completed")


@handles(p.Rename, AUTH)
async def rename(session: Session, cmd: p.Rename) -> list[bytes]:
    mailbox = await _find(session, cmd.old)
    if is_local(mailbox):
        raise CommandFailed(
            f"{mailbox.name} is a local folder of imapproxy", response_code=replies.code("CANNOT")
        )
    new = _valid_new_name(session, cmd.new)
    if await session.account.find_mailbox(new) is not None:
        raise CommandFailed("target mailbox exists", response_code=replies.code("ALREADYEXISTS"))
    await session.account.outbox.perform(RenameMailbox(mailbox.name, new), origin=session)
    return ok(session, cmd.tag, "RENAME completed")


async def _subscription(session: Session, tag: str, name: str, subscribed: bool) -> list[bytes]:
    await session.account.outbox.perform(
        SetSubscription(normalize_name(name), subscribed), origin=session
    )
    verb = "SUBSCRIBE" if subscribed else "UNSUBSCRIBE"
    return ok(session, tag, f"{verb} completed")


@handles(p.Subscribe, AUTH)
async def subscribe(session: Session, cmd: p.Subscribe) -> list[bytes]:
    return await _subscription(session, cmd.tag, cmd.mailbox, True)


@handles(p.Unsubscribe, AUTH)
async def unsubscribe(session: Session, cmd: p.Unsubscribe) -> list[bytes]:
    return await _subscription(session, cmd.tag, cmd.mailbox, False)
