"""COMPRESS (RFC 4978): DEFLATE for clients on a thin link, once logged in.

Offered after authentication only, as Dovecot does. Everything answered before the
tagged OK leaves uncompressed and in full (the handler waits for the output to drain);
compression starts with the first byte after that OK's CRLF, both ways.
"""

from __future__ import annotations

from imapproxy import protocol as p
from imapproxy.server.handlers.general import ok
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import AUTH, Session, handles


@handles(p.Compress, AUTH)
async def compress(session: Session, cmd: p.Compress) -> None:
    if cmd.mechanism != "DEFLATE":
        raise CommandFailed("unknown compression mechanism", status="BAD")
    connection = session.connection
    if connection.deflate is not None:
        raise CommandFailed("DEFLATE is already active", status="BAD")
    await connection.drained()
    session.send(ok(session, cmd.tag, "DEFLATE active"))
    connection.start_compression()
