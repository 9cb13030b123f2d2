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
from imapproxy.server import replies
from imapproxy.server.replies import CommandFailed
from imapproxy.server.view import SelectedView
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
    registry: AccountRegistry
    tls_options: Any = None  # server TLS options when STARTTLS is offered
    max_append: int = 64 * 2**20


Handler = Callable[["Session", Any], Awaitable[list[bytes] | None]]
HANDLERS: dict[type, tuple[frozenset[State], Handler]] = {}

ANY = frozenset(State)
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


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
        self.runtime: AccountRuntime | None = None
        self.view: SelectedView | None = None
        self.tls_active = False
        self._append: Any = None

    # plumbing ----------------------------------------------------------------

    def greeting(self) -> list[bytes]:
        from imapproxy.server.capabilities import capabilities

        caps = capabilities(False, self.tls_active, self.context.tls_options is not None)
        return replies.untagged_status(
            "OK", "imapproxy ready", replies.code("CAPABILITY", *replies.atoms(caps))
        )

    def send(self, chunks: list[bytes]) -> None:
        self.connection.write_chunks(chunks)

    @property
    def account(self) -> AccountRuntime:
        assert self.runtime is not None
        return self.runtime

    @property
    def selected(self) -> SelectedView:
        assert self.view is not None
        return self.view

    async def handle(self, command: Any) -> None:
        tag = command.tag
        registered = HANDLERS.get(type(command))
        if registered is None:
            self.send(replies.tagged(tag, "BAD", "command not supported"))
            return
        states, handler = registered
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
        self.leave_selected()
        if self.runtime is not None:
            self.runtime.sessions -= 1

    # selected state ----------------------------------------------------------

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

    def append_start(self, event: p.AppendStart) -> None:
        from imapproxy.server.handlers.messages import AppendInProgress

        self._append = AppendInProgress(event)

    def append_chunk(self, data: bytes) -> None:
        if self._append is not None:
            self._append.add(data)

    def append_abort(self) -> None:
        self._append = None

    async def append_end(self, event: p.AppendEnd) -> None:
        from imapproxy.server.handlers.messages import append

        pending, self._append = self._append, None
        if pending is None:
            self.send(replies.tagged(event.tag, "BAD", "APPEND without message"))
            return
        if self.state not in AUTH:
            self.send(replies.tagged(event.tag, "BAD", "APPEND needs an authenticated session"))
            return
        await self.run_handler(event.tag, append(self, pending), "APPEND")
