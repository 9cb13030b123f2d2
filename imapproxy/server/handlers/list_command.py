"""LIST and LSUB (RFC 3501 §6.3.8-9), with LIST-EXTENDED (RFC 5258), LIST-STATUS
(RFC 5819), CHILDREN (RFC 3348) and the SPECIAL-USE options (RFC 6154).

Answered from the replica's folder tree, online and offline (listing.py computes the
rows), after fetching the list from the upstream unless NOTIFY keeps it current; the STATUS return option is answered as STATUS is, from the replica, after a
sync of each listed mailbox when the upstream is reachable.
"""

from __future__ import annotations

from imapproxy import protocol as p
from imapproxy.server import listing, replies
from imapproxy.server.handlers.general import ok
from imapproxy.server.handlers.mailboxes import (
    check_status_items,
    mailbox_name,
    status_response,
    unavailable,
)
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import AUTH, Session, handles
from imapproxy.store.mailboxes import Mailbox
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable


def _list_line(kind: str, row: listing.Row, utf8: bool) -> list[bytes]:
    delimiter = None if row.delimiter is None else row.delimiter.encode()
    name = mailbox_name(row.name, utf8)
    values: list[p.Value] = [replies.atoms(row.attributes), delimiter, name]
    if row.child_info:
        values.append((p.Atom("CHILDINFO"), tuple(c.encode() for c in row.child_info)))
    return replies.untagged(kind, *values)


def _options(cmd: p.List, rev2: bool) -> tuple[listing.ListOptions, tuple[str, ...] | None]:
    """The options, and the STATUS items asked for (None: no STATUS return option). A
    plain LIST of an IMAP4rev2 client has the child and special-use attributes it
    would have had from IMAP4rev1 (RFC 9051 §6.3.9.5 allows them unasked)."""
    returns: set[str] = {"CHILDREN", "SPECIAL-USE"} if rev2 and not cmd.extended else set()
    status_items: tuple[str, ...] | None = None
    for option in cmd.return_options:
        if isinstance(option, tuple):
            status_items = tuple(option[1])
            check_status_items(status_items)
            returns.add("STATUS")
        else:
            returns.add(option.upper())
    options = listing.ListOptions(
        frozenset(o.upper() for o in cmd.select_options), frozenset(returns)
    )
    refusal = listing.check_options(options)
    if refusal is not None:
        raise CommandFailed(refusal, status="BAD")
    return options, status_items


@handles(p.List, AUTH)
async def list_(session: Session, cmd: p.List) -> list[bytes]:
    rev2 = session.modes.rev2
    options, status_items = _options(cmd, rev2)
    # The client asks for the list: fetch it fresh, unless NOTIFY keeps the replica's
    # current (offline, the replica's stands).
    if not session.account.list_fresh():
        await session.account.refresh_mailboxes(force=True)
    boxes = session.account.mailboxes()
    if not boxes:
        # Never an empty list for "unknown": clients delete the folders they no longer see.
        raise unavailable("the folder list is not in the replica yet; upstream unreachable")
    inbox = next((m for m in boxes if m.name == "INBOX"), None)
    delimiter = (inbox.delimiter if inbox else None) or "/"
    kind = "LSUB" if cmd.lsub else "LIST"
    if cmd.patterns == ("",) and not cmd.lsub and not cmd.extended:
        # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the reference's root.
        root = listing.root(cmd.reference, delimiter).encode()
        session.send(replies.untagged("LIST", (p.Atom("\\Noselect"),), delimiter.encode(), root))
        return ok(session, cmd.tag, "LIST completed")
    patterns = [listing.join(cmd.reference, pat) for pat in cmd.patterns]
    folders = [listing.Folder(m.name, m.delimiter, m.attributes, m.subscribed) for m in boxes]
    if cmd.lsub or options.subscribed:
        # Subscriptions whose mailbox is gone are listed too (RFC 3501 §6.3.9, RFC 5258).
        await session.account.refresh_subscriptions()
        folders += [
            listing.Folder(name, delimiter, ("\\NonExistent",), True)
            for name in sorted(session.account.orphan_subscriptions())
        ]
    if cmd.lsub:
        rows = listing.lsub_rows(folders, patterns)
    elif cmd.extended or rev2:
        # IMAP4rev2 folds LIST-EXTENDED in: its rules for every LIST (RFC 9051 §6.3.9).
        rows = listing.extended_rows(folders, patterns, delimiter, options)
    else:
        rows = listing.list_rows(folders, patterns, delimiter)
    by_name = {m.name: m for m in boxes}
    for row in rows:
        session.send(_list_line(kind, row, rev2))
        mailbox = by_name.get(row.name)
        if status_items is not None and mailbox is not None and mailbox.selectable:
            await _send_status(session, mailbox, status_items)
    return ok(session, cmd.tag, f"{kind} completed")


async def _send_status(session: Session, mailbox: Mailbox, items: tuple[str, ...]) -> None:
    """RFC 5819 §2: a mailbox whose status cannot be had gets no STATUS response, and the
    LIST goes on; one never synced is left out rather than shown empty."""
    try:
        current = await session.account.sync(mailbox, fresh_enough=True)
    except (UpstreamRefused, UpstreamUnavailable):
        return
    if not current.selectable or not current.contents_known:
        return
    session.send(status_response(session, current, items))
