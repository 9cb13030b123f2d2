"""One client session: IMAP state, command dispatch, and the replies to send.

Handlers are ``async def`` functions of (session, command); whatever they raise
is mapped to a tagged reply here, once: their own refusals (CommandFailed) verbatim,
the upstream's refusals with its code and text, an unreachable upstream as
``NO [UNAVAILABLE]``, and anything else as a generic NO while the details go to the
log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from imapproxy import protocol as p
from imapproxy.account import AccountRuntime
from imapproxy.registry import AccountRegistry
from imapproxy.router import ListenerLogins
from imapproxy.sasl import MECHANISMS
from imapproxy.server import replies, rev2
from imapproxy.server.capabilities import capabilities, upstream_append_limit
from imapproxy.server.held_content import HeldContent
from imapproxy.server.replies import CommandFailed
from imapproxy.server.view import Modes, SelectedView
from imapproxy.store import mailboxes
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable

if TYPE_CHECKING:
    from imapproxy.server.connection import ClientConnection

log = logging.getLogger(__name__)


class State(Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4


@dataclass
class ServerContext:
    """What every session needs from the service."""

    reactor: Any
    #: Where logins go: one upstream's registry, or the router bound to this listener.
    registry: AccountRegistry | ListenerLogins
    tls_options: Any = None  # server TLS options when STARTTLS is offered
    max_append: int = 64 * 2**20
    #: A non-loopback listener with a certificate: passwords only after STARTTLS.
    require_tls_for_login: bool = False
    #: The implicit-TLS listener (``--listen-tls``): every session is private from its
    #: first byte, so STARTTLS is neither offered nor accepted.
    implicit_tls: bool = False
    #: Told when a logged-in session ends (the router counts an account's sessions, to
    #: close the accounts nobody uses).
    session_ended: Callable[[AccountRuntime], None] | None = None


Handler = Callable[["Session", Any], Awaitable[list[bytes] | None]]
HANDLERS: dict[type, tuple[frozenset[State], Handler]] = {}

ANY = frozenset(State)
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


APPEND_NEEDS_AUTH = "APPEND needs an authenticated session"


class _RefusedAppend:
    """An APPEND message sent (non-synchronizing) before login: read off the wire, to
    stay in step with the client, but never stored, so an anonymous client cannot make
    us allocate up to max_append per connection."""

    def add(self, data: bytes) -> None:
        pass


def handles(command: type, states: frozenset[State]) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[command] = (states, handler)
        return handler

    return register


class Session:
    def __init__(self, context: ServerContext, connection: ClientConnection) -> None:
        self.context = context
        self.connection = connection
        self.state = State.NOT_AUTHENTICATED
        self._runtime: AccountRuntime | None = None
        self._ended = False
        self.view: SelectedView | None = None
        self.tls_active = context.implicit_tls
        self._append: Any = None
        #: The earlier, complete messages of a MULTIAPPEND in progress.
        self._append_batch: list[Any] = []
        #: CONDSTORE/QRESYNC as enabled for this connection (every view shares it).
        self.modes = Modes()
        #: Work the running command leaves for after its answer (``after_answer``).
        self._after_answer: list[Callable[[], None]] = []
        #: What this session's FETCHes took from the upstream, not kept yet.
        self.held = HeldContent(context.reactor, self._kept)

    # plumbing ----------------------------------------------------------------

    def greeting(self) -> list[bytes]:
        return replies.untagged_status(
            "OK",
            "imapproxy ready",
            replies.code("CAPABILITY", *replies.atoms(self.capabilities())),
        )

    def capabilities(self) -> list[str]:
        caps = capabilities(
            self.state is not State.NOT_AUTHENTICATED,
            self.tls_active,
            self.context.tls_options is not None,
            login_disabled=self.login_disabled,
            upstream=self.upstream_capabilities,
        )
        if self.state is State.NOT_AUTHENTICATED and not self.login_disabled:
            # OAuth only where the upstream takes it (see advertised_mechanisms); any
            # doubt advertises none, the greeting never fails over it.
            try:
                offered = self.context.registry.advertised_mechanisms()
            except Exception:
                offered = frozenset()
            caps += [f"AUTH={m}" for m in MECHANISMS if m in offered]
        # RFC 7889: the limit announced is the smaller of the upstream's and our own.
        return [
            f"APPENDLIMIT={self.append_limit}" if c.startswith("APPENDLIMIT=") else c for c in caps
        ]

    @property
    def append_limit(self) -> int:
        """The biggest message this session may APPEND: ours, or the upstream's RFC 7889
        limit when it is smaller."""
        limit = upstream_append_limit(self.upstream_capabilities)
        own = self.context.max_append
        return own if limit is None else min(own, limit)

    @property
    def upstream_capabilities(self) -> frozenset[str]:
        """What the account's upstream offered last (empty before login)."""
        if self._runtime is None:
            return frozenset()
        return self._runtime.link.upstream_capabilities

    @property
    def login_disabled(self) -> bool:
        """A password sent now would cross the network in clear (RFC 9051 §6.2.3)."""
        return self.context.require_tls_for_login and not self.tls_active

    def send(self, chunks: list[bytes]) -> None:
        self.connection.write_chunks(chunks)

    def after_answer(self, work: Callable[[], None]) -> None:
        """Run work once the running command's tagged answer has gone to the client,
        whatever that answer is: what the client waits for does not wait for it."""
        self._after_answer.append(work)

    def _kept(self) -> None:
        if self._runtime is not None:
            self._runtime.trim_cache()

    def _answered(self) -> None:
        if not self._after_answer:
            return
        works, self._after_answer = self._after_answer, []
        self.connection.flush()
        for work in works:
            try:
                work()
            except Exception:
                log.exception("work after an answer failed")

    @property
    def runtime(self) -> AccountRuntime | None:
        return self._runtime

    @runtime.setter
    def runtime(self, runtime: AccountRuntime | None) -> None:
        """A login that finishes after the client left ends at once: the account
        must not count a session that no longer exists."""
        self._runtime = runtime
        if runtime is not None and self._ended:
            self._end(runtime)

    def _end(self, runtime: AccountRuntime) -> None:
        if self.context.session_ended is not None:
            self.context.session_ended(runtime)

    @property
    def account(self) -> AccountRuntime:
        assert self.runtime is not None
        return self.runtime

    @property
    def selected(self) -> SelectedView:
        assert self.view is not None
        return self.view

    async def handle(self, command: Any) -> None:
        if self.modes.rev2:
            command = rev2.adapt(command)
        if not isinstance(command, p.Fetch | p.Logout):
            self.held.keep()  # it may read the cache (or the client paused): see held_content.py
        tag = command.tag
        registered = HANDLERS.get(type(command))
        if registered is None:
            self.send(replies.tagged(tag, "BAD", "command not supported"))
            return
        states, handler = registered
        if not self.refresh_selected() and self._mailbox_gone(tag, states):
            return
        if self.state not in states:
            self.send(
                replies.tagged(
                    tag,
                    "BAD",
                    f"command not valid in {self.state.name.lower().replace('_', ' ')} state",
                )
            )
            return
        await self.run_handler(tag, handler(self, command), type(command).__name__.upper())

    async def run_handler(self, tag: str, work: Awaitable[list[bytes] | None], name: str) -> None:
        try:
            await self._answer(tag, work, name)
        finally:
            self._answered()

    async def _answer(self, tag: str, work: Awaitable[list[bytes] | None], name: str) -> None:
        try:
            tail = await work
        except CommandFailed as failed:
            self.send(self.updates(allow_expunge=False))
            self.send(replies.tagged(tag, failed.status, failed.text, failed.code))
            return
        except UpstreamRefused as refused:
            self.send(self.updates(allow_expunge=False))
            self.send(replies.tagged(tag, "NO", refused.text or "upstream refused", refused.code))
            return
        except UpstreamUnavailable as exc:
            self.send(replies.tagged(tag, "NO", str(exc), replies.code("UNAVAILABLE")))
            return
        except Exception:
            log.exception("command %s failed", name)
            self.send(
                replies.tagged(tag, "NO", f"{name} failed on the proxy", replies.code("SERVERBUG"))
            )
            return
        if tail is not None:
            self.send(tail)

    def updates(self, allow_expunge: bool = True) -> list[bytes]:
        if self.view is None:
            return []
        if self.view.deleted:
            return []
        return self.view.updates(allow_expunge)

    def closed(self) -> None:
        self.held.keep()
        self.leave_selected()
        if not self._ended:
            self._ended = True
            if self._runtime is not None:
                self._end(self._runtime)

    # selected state ----------------------------------------------------------

    def _mailbox_gone(self, tag: str, states: frozenset[State]) -> bool:
        """Tell the client its mailbox was closed under it; True when that answers the
        command (one that needs a selected mailbox), False when the command can go on."""
        self.send(replies.untagged_status("OK", "mailbox closed", replies.code("CLOSED")))
        if self.state in states:
            return False
        self.send(
            replies.tagged(
                tag, "NO", "the selected mailbox was deleted", replies.code("NONEXISTENT")
            )
        )
        return True

    def refresh_selected(self) -> bool:
        """Take the selected mailbox's record afresh, by id: a RENAME (ours or another
        session's) changes its name, and the upstream must hear the new one. False when
        it is gone, after leaving selected state (RFC 9051 §7.1: CLOSED, not BYE)."""
        view = self.view
        if view is None or self.runtime is None:
            return True
        old = view.mailbox
        current = self.runtime.store.read(lambda tx: mailboxes.get(tx, old.account, old.id))
        if current is None:
            self.leave_selected()
            return False
        view.mailbox = current
        if current.name != old.name and self.runtime.link.watched == old.name:
            self.runtime.watch(current)  # the upstream IDLE follows the rename
        return True

    def enter_selected(self, view: SelectedView) -> None:
        self.leave_selected()
        self.view = view
        self.state = State.SELECTED
        self.account.notifier.subscribe(self.account.account.id, view.mailbox.id, view.on_change)
        self.account.watch(view.mailbox)

    def leave_selected(self) -> None:
        if self.view is not None and self.runtime is not None:
            self.runtime.notifier.unsubscribe(
                self.runtime.account.id, self.view.mailbox.id, self.view.on_change
            )
        self.view = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    # APPEND streaming (driven by the connection, outside the command queue) ---

    @property
    def may_append(self) -> bool:
        return self.state in AUTH

    def append_start(self, event: p.AppendStart) -> None:
        from imapproxy.server.handlers.messages import AppendInProgress

        if self.modes.rev2:
            event = rev2.adapt(event)
        if not event.continued:
            self._append_batch = []
        elif self._append is not None:
            # MULTIAPPEND (RFC 3502): the message before is complete; keep it for the end.
            self._append_batch.append(self._append)
        self._append = AppendInProgress(event) if self.may_append else _RefusedAppend()

    def append_chunk(self, data: bytes) -> None:
        if self._append is not None:
            self._append.add(data)

    def append_abort(self) -> None:
        self._append = None
        self._append_batch = []

    async def append_end(self, event: p.AppendEnd) -> None:
        from imapproxy.server.handlers.messages import append
        from imapproxy.server.handlers.multiappend import append_all

        pending, self._append = self._append, None
        batch, self._append_batch = [*self._append_batch, pending], []
        if pending is None:
            self.send(replies.tagged(event.tag, "BAD", "APPEND without message"))
            return
        if any(isinstance(m, _RefusedAppend) for m in batch) or not self.may_append:
            self.send(replies.tagged(event.tag, "BAD", APPEND_NEEDS_AUTH))
            return
        if len(batch) > 1:
            await self.run_handler(event.tag, append_all(self, batch), "APPEND")
            return
        await self.run_handler(event.tag, append(self, pending), "APPEND")
