"""Mailbox commands: STATUS, SELECT/EXAMINE, CLOSE/UNSELECT, CREATE, DELETE,
RENAME, SUBSCRIBE/UNSUBSCRIBE — answered from the replica, changes through the outbox."""

from __future__ import annotations

from imapproxy import protocol as p
from imapproxy.outbox.folders import CreateMailbox, DeleteMailbox, RenameMailbox, SetSubscription
from imapproxy.outbox.replica import is_local
from imapproxy.server import condstore, listing, replies, rev2
from imapproxy.server.handlers.general import ok
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import AUTH, SELECTED, Session, handles
from imapproxy.server.view import SelectedView
from imapproxy.store import Tx
from imapproxy.store import mailboxes as store_mailboxes
from imapproxy.store import messages as store_messages
from imapproxy.store.mailboxes import Mailbox, normalize_name

#: RFC 6154 §2 and RFC 8457 (\\Important), as LIST spells them.
SPECIAL_USE_ATTRIBUTES = (
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
    "\\Important",
)
STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "DELETED"}
)


def mailbox_name(name: str, utf8: bool = False) -> bytes | p.Atom:
    """A mailbox name as sent to clients: INBOX as an atom, others quoted; in UTF-8 for
    a client that enabled IMAP4rev2, else as the replica spells it (modified UTF-7)."""
    if name == "INBOX":
        return p.Atom("INBOX")
    return (rev2.to_client(name) if utf8 else name).encode()


def unavailable(reason: str) -> CommandFailed:
    return CommandFailed(reason, response_code=replies.code("UNAVAILABLE"))


async def _find(session: Session, name: str) -> Mailbox:
    mailbox = await session.account.find_mailbox(name)
    if mailbox is None:
        if not session.account.mailboxes():
            # Not even the folder list was ever fetched: "no such mailbox" would be a guess.
            raise unavailable("the folder list is not in the replica yet; upstream unreachable")
        raise CommandFailed("no such mailbox", response_code=replies.code("NONEXISTENT"))
    return mailbox


async def synced(session: Session, name: str, fresh_enough: bool = False) -> Mailbox:
    """The mailbox brought up to date; offline, as the replica has it. A mailbox whose
    message list the replica never had is refused rather than shown empty: a client
    would take zero messages for the truth and may delete its own copies.

    ``fresh_enough``: a replica that NOTIFY keeps current is taken as it is, without a
    round trip (STATUS, which clients send for every folder, and SELECT). It is as
    current as the upstream's notification delay; a change still on its way reaches
    the session as the usual untagged responses once its resync lands."""
    mailbox = await _find(session, name)
    if not mailbox.selectable:
        raise CommandFailed("mailbox cannot be selected", response_code=replies.code("NONEXISTENT"))
    synced = await session.account.sync(mailbox, fresh_enough=fresh_enough)
    if not synced.contents_known:
        raise unavailable(
            f"the messages of {synced.name} are not in the replica yet (never synced); "
            "upstream unreachable"
        )
    return synced


def status_values(session: Session, mailbox: Mailbox) -> dict[str, int]:
    """Every STATUS item (RFC 3501, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE), from the replica."""
    stats = session.account.stats(mailbox)
    return {
        "MESSAGES": stats.messages,
        "RECENT": session.account.store.read(lambda tx: store_mailboxes.recent_count(tx, mailbox)),
        "UIDNEXT": mailbox.uidnext,
        "UIDVALIDITY": mailbox.uidvalidity,
        "UNSEEN": stats.unseen,
        "SIZE": stats.size,
        "HIGHESTMODSEQ": mailbox.highestmodseq,
    }


def _deleted_count(session: Session, mailbox: Mailbox) -> int:
    """STATUS DELETED (RFC 9051 §6.3.11): messages flagged \\Deleted."""

    def count(tx: Tx) -> int:
        found = store_messages.iterate(tx, mailbox.account, mailbox.id)
        return sum(1 for m in found if any(f.upper() == "\\DELETED" for f in m.flags))

    return session.account.store.read(count)


def check_status_items(items: tuple[str, ...]) -> None:
    for item in items:
        if item.upper() not in STATUS_ITEMS:
            raise CommandFailed(f"unsupported STATUS item {item}", status="BAD")


def status_response(session: Session, mailbox: Mailbox, items: tuple[str, ...]) -> list[bytes]:
    """``* STATUS name (...)`` with the items in the order asked."""
    values = status_values(session, mailbox)
    if any(item.upper() == "DELETED" for item in items):
        values["DELETED"] = _deleted_count(session, mailbox)
    if any(item.upper() == "HIGHESTMODSEQ" for item in items):
        session.send(condstore.enable_condstore(session.modes, session.view))
    pairs: list[p.Value] = []
    for item in items:
        pairs += [p.Atom(item.upper()), values[item.upper()]]
    name = mailbox_name(mailbox.name, session.modes.rev2)
    return replies.untagged("STATUS", name, tuple(pairs))


@handles(p.Status, AUTH)
async def status(session: Session, cmd: p.Status) -> list[bytes]:
    check_status_items(cmd.items)
    mailbox = await synced(session, cmd.mailbox, fresh_enough=True)
    session.send(status_response(session, mailbox, cmd.items))
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
    mailbox = await synced(session, cmd.mailbox, fresh_enough=True)
    view = SelectedView(
        session.account.store, mailbox, cmd.readonly, origin=session, modes=session.modes
    )
    mailbox = view.mailbox
    stats = session.account.stats(mailbox)
    session.send(view.announce_keywords(stats.keywords))
    session.send(replies.untagged("EXISTS", number=len(view.uids)))
    if session.modes.rev2:
        # RFC 9051 §6.3.2: a LIST response for the mailbox; no RECENT, no UNSEEN.
        session.send(_select_list(session, mailbox))
    else:
        session.send(replies.untagged("RECENT", number=len(view.recent)))
    first_unseen = stats.first_unseen
    if first_unseen is not None and not session.modes.rev2:
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


def _select_list(session: Session, mailbox: Mailbox) -> list[bytes]:
    folders = [
        listing.Folder(m.name, m.delimiter, m.attributes, m.subscribed)
        for m in session.account.mailboxes()
    ]
    options = listing.ListOptions(returns=frozenset({"CHILDREN", "SPECIAL-USE"}))
    rows = listing.extended_rows(folders, [mailbox.name], mailbox.delimiter or "/", options)
    # (The name is the pattern: one with * or % matches others too; keep its own row.)
    attributes = next((r.attributes for r in rows if r.name == mailbox.name), ())
    delimiter = None if mailbox.delimiter is None else mailbox.delimiter.encode()
    name = mailbox_name(mailbox.name, utf8=True)
    return replies.untagged("LIST", replies.atoms(attributes), delimiter, name)


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


def _special_use(session: Session, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 6154 §3: the uses asked for, spelled as LIST shows them; NO [USEATTR] for one
    that is unknown, or when the upstream cannot record any (the mailbox must then not
    be created at all)."""
    spelled = {a.upper(): a for a in SPECIAL_USE_ATTRIBUTES}
    uses = []
    for attribute in wanted:
        if attribute.upper() not in spelled:
            raise CommandFailed(
                f"{attribute} is not a special use", response_code=replies.code("USEATTR")
            )
        uses.append(spelled[attribute.upper()])
    if uses and "CREATE-SPECIAL-USE" not in session.upstream_capabilities:
        raise CommandFailed(
            "the upstream server cannot create special-use mailboxes",
            response_code=replies.code("USEATTR"),
        )
    return tuple(dict.fromkeys(uses))


@handles(p.Create, AUTH)
async def create(session: Session, cmd: p.Create) -> list[bytes]:
    name = _valid_new_name(session, cmd.mailbox)
    uses = _special_use(session, cmd.special_use)
    if await session.account.find_mailbox(name) is not None:
        raise CommandFailed("mailbox already exists", response_code=replies.code("ALREADYEXISTS"))
    await session.account.outbox.perform(CreateMailbox(name, special_use=uses), origin=session)
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
    if mailbox.name == "INBOX":
        from imapproxy.server.handlers.rename_inbox import rename_inbox

        inbox = session.account.mailbox("INBOX")
        delimiter = (inbox.delimiter if inbox else None) or "/"
        await rename_inbox(session, _valid_new_name(session, cmd.new), delimiter)
        return ok(session, cmd.tag, "RENAME completed")
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
