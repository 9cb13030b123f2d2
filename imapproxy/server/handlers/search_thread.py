"""THREAD / UID THREAD (RFC 5256: ORDEREDSUBJECT and REFERENCES), evaluated on the replica.

The messages are chosen as SEARCH chooses them; the message ids, subjects and dates come
from cached header blocks (search_sort.headers_of), the trees from message.threading.
"""

from __future__ import annotations

from imapproxy import message as mime
from imapproxy import protocol as p
from imapproxy.message import threading
from imapproxy.message.base_subject import base_subject
from imapproxy.server import replies, sorting
from imapproxy.server.handlers.general import ok
from imapproxy.server.handlers.search import matching
from imapproxy.server.handlers.search_sort import headers_of, missing_note
from imapproxy.server.session import SELECTED, Session, handles


@handles(p.Thread, SELECTED)
async def thread(session: Session, cmd: p.Thread) -> list[bytes]:
    view = session.selected
    found, note = await matching(session, cmd.criteria, cmd.charset)
    headers, missing = await headers_of(session, found)
    members = []
    for message in found:
        header = headers[message.uid]
        arrival = int(p.parse_datetime(message.internaldate).timestamp())
        subject, reply = base_subject(mime.header_value(header, b"subject"))
        seq = view.seq(message.uid)
        assert seq is not None
        ids = threading.message_ids(mime.header_value(header, b"message-id"))
        members.append(
            threading.Threadable(
                number=message.uid if cmd.uid else seq,
                date=sorting.sent_date(header, arrival),
                base_subject=subject,
                is_reply=reply,
                message_id=ids[0] if ids else None,
                references=threading.parent_chain(
                    mime.header_value(header, b"references"),
                    mime.header_value(header, b"in-reply-to"),
                ),
            )
        )
    if cmd.algorithm == "ORDEREDSUBJECT":
        threads = threading.orderedsubject(members)
    else:
        threads = threading.references(members)
    written = threading.format_threads(threads)
    session.send(replies.untagged("THREAD", *([p.Raw(written)] if written else [])))
    return ok(
        session, cmd.tag, "THREAD completed" + note + missing_note(missing), allow_expunge=False
    )
