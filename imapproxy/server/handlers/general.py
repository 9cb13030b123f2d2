"""Any-state and authentication commands: CAPABILITY, NOOP, LOGOUT, LOGIN, AUTHENTICATE,
STARTTLS, ID, ENABLE, NAMESPACE, CHECK, IDLE."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from imapproxy import __version__, sasl
from imapproxy import protocol as p
from imapproxy.login_limits import LoginAbandoned, source_key
from imapproxy.registry import LoginFailed
from imapproxy.server import condstore, replies
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import ANY, AUTH, NOT_AUTH, Session, State, handles
from imapproxy.upstream.client import PASSWORD
from imapproxy.upstream.errors import UpstreamUnavailable


def ok(
    session: Session,
    tag: str,
    text: str,
    code: p.ResponseCode | None = None,
    allow_expunge: bool = True,
) -> list[bytes]:
    """Pending news, then the tagged OK: the reply shape of nearly every command."""
    return session.updates(allow_expunge) + replies.tagged(tag, "OK", text, code)


def _caps(session: Session) -> list[str]:
    return session.capabilities()


def _refuse_cleartext_password(session: Session) -> None:
    """RFC 5530 PRIVACYREQUIRED: we advertised LOGINDISABLED; STARTTLS first."""
    if session.login_disabled:
        raise CommandFailed(
            "log in after STARTTLS: passwords are not accepted in clear here",
            response_code=replies.code("PRIVACYREQUIRED"),
        )


@handles(p.Capability, ANY)
async def capability(session: Session, cmd: p.Capability) -> list[bytes]:
    session.send(replies.untagged("CAPABILITY", *replies.atoms(_caps(session))))
    return ok(session, cmd.tag, "CAPABILITY completed")


@handles(p.Noop, ANY)
async def noop(session: Session, cmd: p.Noop) -> list[bytes]:
    if session.view is not None:
        await session.account.sync(session.view.mailbox)
    return ok(session, cmd.tag, "NOOP completed")


@handles(p.Check, AUTH)
async def check(session: Session, cmd: p.Check) -> list[bytes]:
    if session.view is not None:
        await session.account.sync(session.view.mailbox)
    return ok(session, cmd.tag, "CHECK completed")


@handles(p.Logout, ANY)
async def logout(session: Session, cmd: p.Logout) -> list[bytes]:
    session.send(replies.untagged_status("BYE", "imapproxy logging out"))
    session.send(replies.tagged(cmd.tag, "OK", "LOGOUT completed"))
    session.leave_selected()
    session.state = State.LOGOUT
    session.connection.close()
    return []


async def _login(
    session: Session,
    tag: str,
    username: bytes,
    password: bytes,
    mechanism: str = PASSWORD,
    refused: Callable[[LoginFailed], Awaitable[None]] | None = None,
) -> list[bytes]:
    """LOGIN and AUTHENTICATE alike: the registry (and its limiter) decides. Any
    exception other than these propagates to run_handler, which answers NO.
    ``refused`` runs before the NO of a failed login (the OAuth error challenge)."""
    connection = session.connection
    try:
        runtime = await session.context.registry.login(
            username,
            password,
            source=source_key(connection.transport.getPeer()),
            abandoned=lambda: connection.gone,
            mechanism=mechanism,
        )
    except LoginAbandoned:
        raise CommandFailed("client went away") from None
    except LoginFailed as exc:
        if refused is not None:
            await refused(exc)
        raise CommandFailed(
            "invalid credentials", response_code=replies.code("AUTHENTICATIONFAILED")
        ) from None
    except UpstreamUnavailable as exc:
        raise CommandFailed(str(exc), response_code=replies.code("UNAVAILABLE")) from None
    session.runtime = runtime
    session.state = State.AUTHENTICATED
    # Bigger messages are refused as they are announced (NO [TOOBIG]), never taken in.
    connection.reader.max_append = session.append_limit
    caps = replies.code("CAPABILITY", *replies.atoms(_caps(session)))
    return replies.tagged(tag, "OK", "logged in", caps)


@handles(p.Login, NOT_AUTH)
async def login(session: Session, cmd: p.Login) -> list[bytes]:
    _refuse_cleartext_password(session)
    return await _login(session, cmd.tag, cmd.username, cmd.password)


@handles(p.Authenticate, NOT_AUTH)
async def authenticate(session: Session, cmd: p.Authenticate) -> list[bytes]:
    _refuse_cleartext_password(session)
    if sasl.is_mechanism(cmd.mechanism):
        return await _authenticate_bearer(session, cmd)
    if cmd.mechanism.upper() != "PLAIN":
        raise CommandFailed("unsupported authentication mechanism", status="NO")
    response = cmd.initial_response
    if response is None:
        session.send(replies.continuation(""))
        response = await session.connection.read_raw_line()
    if response.strip() == b"*":
        raise CommandFailed("authentication cancelled", status="BAD")
    try:
        decoded = b"" if response == b"=" else base64.b64decode(response, validate=True)
    except binascii.Error:
        raise CommandFailed("invalid base64 in AUTHENTICATE response", status="BAD") from None
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        raise CommandFailed("malformed PLAIN response", status="BAD")
    authzid, username, password = parts
    if authzid and authzid != username:
        raise CommandFailed(
            "proxy authorization is not supported",
            response_code=replies.code("AUTHORIZATIONFAILED"),
        )
    return await _login(session, cmd.tag, username, password)


async def _authenticate_bearer(session: Session, cmd: p.Authenticate) -> list[bytes]:
    """XOAUTH2 / OAUTHBEARER (RFC 7628): the token goes to the upstream, or offline to
    the verifiers of tokens it accepted. A refusal is an error challenge (JSON), the
    client's dummy response, then NO (RFC 7628 §3.2.3)."""
    mechanism = cmd.mechanism.upper()
    response = cmd.initial_response
    if response is None:
        session.send(replies.continuation(""))
        response = await session.connection.read_raw_line()
    if response.strip() == b"*":
        raise CommandFailed("authentication cancelled", status="BAD")
    try:
        login = sasl.parse_client_response(mechanism, sasl.decode_base64(response))
    except sasl.SaslError as exc:
        raise CommandFailed(f"malformed {mechanism} response: {exc}", status="BAD") from None

    async def challenge(failure: LoginFailed) -> None:
        error = sasl.error_challenge(failure.error_json)
        session.send(replies.continuation(base64.b64encode(error).decode()))
        answer = await session.connection.read_raw_line()
        if answer.strip() == b"*":
            raise CommandFailed("authentication cancelled", status="BAD")

    return await _login(session, cmd.tag, login.username, login.token, mechanism, challenge)


@handles(p.StartTLS, NOT_AUTH)
async def starttls(session: Session, cmd: p.StartTLS) -> list[bytes]:
    options = session.context.tls_options
    if session.tls_active:
        raise CommandFailed("TLS is already active", status="BAD")
    if options is None:
        raise CommandFailed("STARTTLS not available", status="BAD")
    session.send(replies.tagged(cmd.tag, "OK", "begin TLS negotiation now"))
    # Anything pipelined after STARTTLS was sent in the clear: drop it (RFC 9051 §6.2.1).
    session.connection.reader = p.CommandReader(max_append=session.context.max_append)
    session.connection.transport.startTLS(options)  # type: ignore[union-attr]
    session.tls_active = True
    return []


@handles(p.Id, ANY)
async def id_(session: Session, cmd: p.Id) -> list[bytes]:
    session.send(replies.untagged("ID", (b"name", b"imapproxy", b"version", __version__.encode())))
    return ok(session, cmd.tag, "ID completed")


@handles(p.Enable, AUTH)
async def enable(session: Session, cmd: p.Enable) -> list[bytes]:
    """RFC 5161: ENABLED lists what this command turned on; unknown names are ignored.
    QRESYNC implies CONDSTORE (RFC 7162 §3.2.3)."""
    wanted = {c.upper() for c in cmd.capabilities}
    modes = session.modes
    enabled: list[str] = []
    news: list[bytes] = []
    if ("CONDSTORE" in wanted or "QRESYNC" in wanted) and not modes.condstore:
        news = condstore.enable_condstore(modes, session.view)
        if "CONDSTORE" in wanted:
            enabled.append("CONDSTORE")
    if "QRESYNC" in wanted and not modes.qresync:
        modes.qresync = True
        enabled.append("QRESYNC")
    if "IMAP4REV2" in wanted and not modes.rev2:
        # Taken even while IMAP4rev2 is not advertised (RFC 5161 lets a server ignore
        # it; a client only asks for what is advertised): see server/rev2.py.
        modes.rev2 = True
        enabled.append("IMAP4rev2")
    session.send(replies.untagged("ENABLED", *replies.atoms(enabled)))
    session.send(news)
    return ok(session, cmd.tag, "ENABLE completed")


@handles(p.Namespace, AUTH)
async def namespace(session: Session, cmd: p.Namespace) -> list[bytes]:
    await session.account.refresh_mailboxes()
    inbox = session.account.mailbox("INBOX")
    delimiter = (inbox.delimiter if inbox is not None else None) or "/"
    session.send(replies.untagged("NAMESPACE", ((b"", delimiter.encode()),), None, None))
    return ok(session, cmd.tag, "NAMESPACE completed")


@handles(p.Idle, AUTH)
async def idle(session: Session, cmd: p.Idle) -> list[bytes]:
    session.send(replies.continuation("idling"))
    view = session.view
    reactor = session.context.reactor

    def push() -> None:
        # News during IDLE goes out at once (RFC 2177), expunges included.
        if session.view is view:
            session.send(session.updates(allow_expunge=True))

    def listener(change: object) -> None:
        # The view hears the change too; push after it has recorded it.
        reactor.callLater(0, push)

    if view is not None:
        session.send(session.updates(allow_expunge=True))
        session.account.notifier.subscribe(session.account.account.id, view.mailbox.id, listener)
        # Ask for a resync now: news that arrived upstream before IDLE shows up at once.
        reactor.callLater(0, session.account.request_sync, view.mailbox.name)
    try:
        line = await session.connection.read_raw_line()
    finally:
        if view is not None:
            session.account.notifier.unsubscribe(
                session.account.account.id, view.mailbox.id, listener
            )
    if line.strip().upper() != b"DONE":
        raise CommandFailed("expected DONE to end IDLE", status="BAD")
    return ok(session, cmd.tag, "IDLE terminated")
