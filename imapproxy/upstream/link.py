"""An account's link to the upstream: one connection, used by one operation at a time.

RFC 4549 §5.3 asks for few connections per account and never the same mailbox
selected twice; one serialized connection gives both. While no operation needs it,
the link IDLEs on the mailbox a client is watching, so changes made elsewhere reach
our clients within seconds; it leaves IDLE before the next operation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from imapproxy.protocol import ContinuationRequest, UntaggedData
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import UpstreamClient, connect
from imapproxy.upstream.connection import Result, Untagged
from imapproxy.upstream.errors import UpstreamError, UpstreamUnavailable, UpstreamUnreachable

T = TypeVar("T")
log = logging.getLogger(__name__)

#: RFC 2177: re-issue IDLE at least every 29 minutes.
IDLE_RENEW_SECONDS = 25 * 60
#: Reconnect backoff while a client is watching a mailbox.
RECONNECT_MIN_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 60.0
#: After a failed connect, commands fail at once for up to this long (then try again).
FAIL_FAST_SECONDS = 10.0
#: Entering or leaving IDLE answers at once on a live link; longer means it is dead.
IDLE_SWITCH_SECONDS = 15.0
#: Upstream changes arriving close together are applied as one resync.
CHANGE_COALESCE_SECONDS = 0.5


class UpstreamLink:
    def __init__(
        self,
        reactor: Any,
        address: UpstreamAddress,
        username: bytes,
        password: bytes,
        ca_file: Path | None = None,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.username = username
        self.password = password
        self.ca_file = ca_file
        self._client: UpstreamClient | None = None
        self._lock = defer.DeferredLock()
        self._watched: str | None = None
        self._on_change: Callable[[str], None] | None = None
        self._idle: tuple[UpstreamClient, defer.Deferred[Result]] | None = None
        self._change_call: Any = None
        self._closing = False
        self._backoff = RECONNECT_MIN_SECONDS
        self._reconnect_call: Any = None
        #: After a failed connect: (until when, why) commands fail at once.
        self._down: tuple[float, str] | None = None
        #: Called after every (re)connection: time to drain the outbox and resync.
        self.on_connected: Callable[[], object] | None = None

    # the one way in ----------------------------------------------------------

    async def use(self, operation: Callable[[UpstreamClient], Awaitable[T]]) -> T:
        """Run operation with the connection to itself; reconnect first if needed."""
        await self._lock.acquire()
        try:
            await self._leave_idle()
            client = await self._connected()
            try:
                return await operation(client)
            except UpstreamUnavailable:
                self._drop(client)
                raise
        finally:
            self._lock.release()
            self._schedule_idle()

    async def _connected(self) -> UpstreamClient:
        if self._client is not None and self._client.protocol.connected_ok:
            return self._client
        if self._down is not None and self.reactor.seconds() < self._down[0]:
            # Offline answers fast: don't make every command wait for a connect attempt.
            raise UpstreamUnreachable(self._down[1])
        try:
            client = await connect(
                self.reactor, self.address, self.username, self.password, self.ca_file
            )
        except UpstreamUnavailable as exc:
            self._down = (self.reactor.seconds() + min(self._backoff, FAIL_FAST_SECONDS), str(exc))
            self._schedule_reconnect()
            raise
        self._down = None
        self._client = client
        self._backoff = RECONNECT_MIN_SECONDS
        client.protocol.on_untagged = self._untagged
        client.protocol.closed.addCallback(lambda _: self._lost(client))
        if self.on_connected is not None:
            self.reactor.callLater(0, self.on_connected)
        return client

    def _lost(self, client: UpstreamClient) -> None:
        if self._client is client:
            self._client = None
            if self._idle is not None and self._idle[0] is client:
                self._idle = None
            log.info("upstream connection lost")
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        """While a client watches a mailbox, keep trying to get back (with backoff)."""
        if self._watched is None or self._closing or self._reconnect_call is not None:
            return
        delay, self._backoff = self._backoff, min(self._backoff * 2, RECONNECT_MAX_SECONDS)
        self._reconnect_call = self.reactor.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        self._reconnect_call = None
        if self._watched is None or self._closing:
            return
        self._down = None  # this is the attempt the fail-fast window was waiting for
        defer.ensureDeferred(self.use(_nothing)).addErrback(lambda _: None)

    def _drop(self, client: UpstreamClient) -> None:
        client.protocol.abort()
        if self._client is client:
            self._client = None

    @property
    def logged_in(self) -> bool:
        """An upstream connection is open and was logged in with our credentials."""
        return self._client is not None and self._client.protocol.connected_ok

    # watching ------------------------------------------------------------------

    @property
    def watched(self) -> str | None:
        return self._watched

    def watch(self, mailbox: str | None, on_change: Callable[[str], None]) -> None:
        """IDLE on mailbox whenever the link is free; call on_change(mailbox) on news."""
        self._on_change = on_change
        if mailbox != self._watched:
            self._watched = mailbox
            if self._idle is not None:
                # Re-target: leave IDLE now, the next idle pass picks the new mailbox.
                defer.ensureDeferred(self.use(_nothing))
            else:
                self._schedule_idle()

    def _untagged(self, event: Untagged) -> None:
        if not isinstance(event, UntaggedData):
            return
        # FETCH outside IDLE answers our own commands; EXISTS/EXPUNGE/VANISHED are news
        # (during SELECT, `selected` is still None, so its EXISTS is not).
        news = event.name in ("EXISTS", "EXPUNGE", "VANISHED") or (
            event.name == "FETCH" and self._idle is not None
        )
        client = self._client
        if not news or client is None or client.selected is None or self._on_change is None:
            return
        if self._change_call is None or not self._change_call.active():
            self._change_call = self.reactor.callLater(
                CHANGE_COALESCE_SECONDS, self._on_change, client.selected
            )

    def _schedule_idle(self) -> None:
        if (
            self._watched is not None
            and not self._closing
            and not self._lock.locked
            and self._idle is None
        ):
            self.reactor.callLater(0, lambda: defer.ensureDeferred(self._enter_idle()))

    async def _enter_idle(self) -> None:
        if self._lock.locked or self._idle is not None or self._watched is None or self._closing:
            return
        await self._lock.acquire()
        try:
            client = self._client
            if client is None or not client.protocol.connected_ok or not client.has("IDLE"):
                return
            await client.ensure_selected(self._watched)
            started: defer.Deferred[None] = defer.Deferred()

            def on_continuation(_: ContinuationRequest) -> None:
                if not started.called:
                    started.callback(None)

            done = defer.ensureDeferred(
                client.protocol.run(
                    lambda tag: [[f"{tag} IDLE\r\n".encode()]],
                    on_continuation,
                    timeout=IDLE_RENEW_SECONDS + 60,
                )
            )

            def failed_to_start(failure: Failure) -> None:
                if not started.called:
                    started.errback(failure)

            done.addErrback(failed_to_start)
            # A stalled link must not hold the lock: no "+" in time means it is dead.
            deadline = self.reactor.callLater(IDLE_SWITCH_SECONDS, client.protocol.abort)
            try:
                await started
            finally:
                if deadline.active():
                    deadline.cancel()
            self._idle = (client, done)
            self.reactor.callLater(IDLE_RENEW_SECONDS, self._renew_idle, done)
        except UpstreamError as exc:
            log.info("upstream IDLE not possible: %s", exc)
        finally:
            self._lock.release()

    def _renew_idle(self, done: defer.Deferred[Result]) -> None:
        if self._idle is not None and self._idle[1] is done:
            defer.ensureDeferred(self.use(_nothing))

    async def _leave_idle(self) -> None:
        if self._idle is None:
            return
        client, done = self._idle
        self._idle = None
        if client.protocol.connected_ok:
            client.protocol.write(b"DONE\r\n")
        deadline = self.reactor.callLater(IDLE_SWITCH_SECONDS, client.protocol.abort)
        try:
            await done
        except UpstreamError:
            self._drop(client)
        finally:
            if deadline.active():
                deadline.cancel()

    async def close(self) -> None:
        self._closing = True
        self._watched = None
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        await self._lock.acquire()
        try:
            await self._leave_idle()
            if self._client is not None:
                await self._client.logout()
                self._client = None
        finally:
            self._lock.release()


async def _nothing(client: UpstreamClient) -> None:
    return None
