"""RENAME INBOX (RFC 3501 §6.3.5, RFC 9051 §6.3.6): the messages move to the new mailbox,
INBOX stays, empty; INBOX's own children are not renamed.

Dovecot 2.3 with Maildir refuses the command itself (``NO [CANNOT] Renaming INBOX isn't
supported``), and other servers differ, so the proxy does not pass RENAME INBOX on:
it carries it out with what every upstream does, CREATE and a MOVE of every message,
through the outbox like any other change (queued offline, replayed in order).
"""

from __future__ import annotations

from imapproxy.outbox.folders import CreateMailbox
from imapproxy.outbox.operations import CopyMessages
from imapproxy.server import replies
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import Session
from imapproxy.store import messages


async def rename_inbox(session: Session, new: str, delimiter: str) -> None:
    """Create ``new`` and move all of INBOX's messages into it (both through the outbox)."""
    from imapproxy.server.handlers.mailboxes import synced
    from imapproxy.server.handlers.messages import _refs

    if new.upper() == "INBOX" or new.upper().startswith("INBOX" + delimiter.upper()):
        raise CommandFailed("Can't rename mailbox under its own child")
    inbox = await synced(session, "INBOX")  # refuses when INBOX's contents are unknown
    if await session.account.find_mailbox(new) is not None:
        raise CommandFailed("target mailbox exists", response_code=replies.code("ALREADYEXISTS"))
    await session.account.outbox.perform(CreateMailbox(new), origin=session)
    target = await session.account.find_mailbox(new)
    if target is None:  # refused upstream and undone meanwhile
        raise CommandFailed(f"{new} could not be created")
    account = session.account.account.id
    store = session.account.store
    content = store.read(lambda tx: list(messages.iterate(tx, account, inbox.id)))
    if not content:
        return
    inbox = session.account.mailbox("INBOX") or inbox
    operation = CopyMessages(
        inbox.id,
        inbox.name,
        inbox.upstream_uidvalidity,
        target.id,
        target.name,
        target.upstream_uidvalidity,
        target.upstream_uidnext,
        True,
        _refs(session, content, with_message_id=True),
    )
    await session.account.outbox.perform(operation, origin=session)
