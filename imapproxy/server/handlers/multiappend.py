"""MULTIAPPEND (RFC 3502): several messages in one APPEND, all or none of them.

Every message is checked before any is stored; then all go into the replica in one
transaction and into the outbox as consecutive entries, replayed in order (to the
upstream they are separate APPENDs). The answer carries ``APPENDUID validity uid-set``
(RFC 4315) for all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imapproxy import protocol as p
from imapproxy.server import replies
from imapproxy.server.handlers.general import ok
from imapproxy.server.handlers.messages import append_operation, append_target, check_append
from imapproxy.server.session import Session

if TYPE_CHECKING:
    from imapproxy.server.handlers.messages import AppendInProgress


async def append_all(session: Session, batch: list[AppendInProgress]) -> list[bytes]:
    first = batch[0].start
    for pending in batch:
        check_append(pending)
    target = await append_target(session, first.mailbox)
    operations = [append_operation(pending, target) for pending in batch]
    results = await session.account.outbox.perform_all(operations, origin=session)
    validity = results[-1][0]
    uids = p.SequenceSet.from_ints(int(uid) for _, uid in results)
    code = replies.code("APPENDUID", validity, p.Atom(str(uids)))
    return ok(session, first.tag, "APPEND completed", code, allow_expunge=session.view is not None)
