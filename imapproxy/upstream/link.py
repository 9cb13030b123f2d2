"""An account's link to the upstream: one connection, used by one operation at a time.

RFC 4549 §5.3 asks for few connections per account and never the same mailbox
selected twice; one serialized connection gives both. While no operation needs it,
the link IDLEs on the mailbox a client is watching, so changes made elsewhere reach
our clients within seconds; it leaves IDLE before the next operation.

The link is in one of the states of ``LinkState``. What matters for clients is that
none of them waits long on a dead upstream:

- A command that gets no answer is failed by the connection's progress watchdog
  within seconds (see ``connection.py``); leaving IDLE must be answered within
  ``IDLE_SWITCH_SECONDS``; a keepalive round trip every ``KEEPALIVE_SECONDS`` while
  idling finds a link that died quietly (and re-issues IDLE well within RFC 2177's
  29 minutes).
- A failed connection puts the link in BACKING_OFF: operations fail at once with
  UpstreamUnreachable (the replica answers what it can) until the next attempt,
  which runs in the background after an exponential backoff with jitter, so many
  proxies that lost the same server do not come back in lockstep.
- A client's operation waits for the link at most ``client_wait`` seconds while
  another operation holds it (a slow SEARCH or COPY on a link that just stalled keeps
  it for up to its patience, 30 s): then it fails with UpstreamBusy, having sent
  nothing, and the replica answers (a write stays applied and queued). Background work
  (replay, background sync, prefetch) passes ``background=True`` and waits its turn.
- Work nobody waits for (the background sync's pass, prefetch) also passes ``spare``:
  it takes the link only once the other operations have left it alone for
  ``SPARE_QUIET_SECONDS``. The link is one connection, and a pass's STATUS or header
  batch taken between two of a client's body reads cost that client its round trip
  and, the pass having opened another folder, one more to open its own again: a cold
  session's 50 body reads at 50 ms took 4.9 s instead of 2.6 s.
- Connection attempts run outside the operation lock. An operation waits for one
  only while the link has no reason to think the upstream is gone (first use, or a
  connection the server closed); after a failure it waits at most
  ``SUSPECT_WAIT_SECONDS``, and the attempt goes on without it.

Every Deferred started here has an errback; failures are logged, never left for the
garbage collector to report.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer, task
from twisted.python.failure import Failure

from imapproxy.protocol import (
    DEFAULT_MAX_LITERAL,
    ContinuationRequest,
    ParseError,
    UntaggedData,
)
from imapproxy.upstream.address import UpstreamAddress
from imapproxy.upstream.client import PASSWORD, UpstreamClient, connect
from imapproxy.upstream.connection import Result, Untagged
from imapproxy.upstream.errors import (
    AuthenticationFailed,
    ClosedAsIdleEnded,
    UpstreamBusy,
    UpstreamError,
    UpstreamRefused,
    UpstreamUnavailable,
    UpstreamUnreachable,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

#: While idling, leave IDLE and send a NOOP this often: a dead link shows within one
#: period, and IDLE is re-issued long before RFC 2177's 29 minutes.
KEEPALIVE_SECONDS = 4 * 60.0
#: Reconnect backoff: the ceiling doubles per failure between these; the delay is
#: drawn between half the ceiling and the ceiling (jitter).
RECONNECT_MIN_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 60.0
#: A connection that lived this long was healthy: its failure starts backoff afresh.
#: (An upstream that accepts LOGIN and then misbehaves must not reset the backoff.)
HEALTHY_SECONDS = 60.0
#: After a failure, operations fail at once for the backoff delay, at most this long.
FAIL_FAST_SECONDS = 10.0
#: Entering or leaving IDLE answers at once on a live link; longer means it is dead.
IDLE_SWITCH_SECONDS = 4.0
#: One connection attempt (TCP, TLS, greeting, login) may take this long in all.
CONNECT_TIMEOUT_SECONDS = 20.0
#: How long an operation waits for an attempt when nothing suggests the upstream is
#: gone (first use; a connection the server closed)...
CONNECT_WAIT_SECONDS = 10.0
#: ...and when the link just failed: the attempt goes on in the background.
SUSPECT_WAIT_SECONDS = 2.0
#: How long a client's operation waits for the link while another holds it without
#: a byte moving (the account sets it from --write-wait: one bound on a client's wait
#: for a silent upstream).
CLIENT_WAIT_SECONDS = 3.0
#: While the operation ahead keeps moving bytes the link is busy, not dead: a client
#: waits its turn up to this long (a gateway's account may serve many sessions).
BUSY_MAX_SECONDS = 60.0
#: How often a waiting client looks whether the operation ahead still progresses.
BUSY_POLL_SECONDS = 0.25
#: Upstream changes arriving close together are applied as one resync.
CHANGE_COALESCE_SECONDS = 0.1
#: IDLE starts only after the link was free this long: a client reading bodies one
#: command after another then pays one round trip per command, not three (leave IDLE,
#: the command, enter IDLE again before the next one may leave it). News is not lost
#: meanwhile: the upstream reports it when IDLE starts, and the watcher hears it anyway.
IDLE_DELAY_SECONDS = 0.3
#: Spare work waits until other operations have left the link alone this long (a
#: client's commands come milliseconds apart while it works, and a user's pause is
#: longer)...
SPARE_QUIET_SECONDS = 0.5
#: ... or at the latest this long after it asked: a link kept busy without a pause
#: (a gateway's many sessions, a client polling NOOP) still gets its background work
#: done...
SPARE_AT_LATEST_SECONDS = 10.0
#: ... for then spare work takes its turns as any other for this long.
SPARE_BURST_SECONDS = 2.0

Connector = Callable[..., Awaitable[UpstreamClient]]
#: What reading values out of an ill-formed answer raises (see UpstreamLink.use).
_MALFORMED = (ParseError, ValueError, TypeError, KeyError, IndexError, AssertionError)


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"  # no connection; the next operation makes one
    CONNECTING = "connecting"  # an attempt runs (outside the operation lock)
    READY = "ready"  # connected and free, or running an operation
    IDLING = "idling"  # IDLE runs on the watched mailbox
    BACKING_OFF = "backing off"  # the upstream failed; operations fail fast until retry
    CLOSED = "closed"


@dataclass
class _Idle:
    client: UpstreamClient
    #: Fires with None when IDLE ended with OK, or with the error that ended it (as a
    #: value: a Failure passed to callback() would make the Deferred itself fail).
    ended: defer.Deferred[BaseException | None]


class UpstreamLink:
    def __init__(
        self,
        reactor: Any,
        address: UpstreamAddress,
        username: bytes,
        password: bytes,
        ca_file: Path | None = None,
        *,
        max_message: int = DEFAULT_MAX_LITERAL,
        connector: Connector = connect,
        rng: random.Random | None = None,
        mechanism: str = PASSWORD,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.username = username
        #: A password, or a bearer token when ``mechanism`` is XOAUTH2 or OAUTHBEARER.
        self.password = password
        self.mechanism = mechanism
        self.ca_file = ca_file
        self.max_message = max_message
        self._connector = connector
        self._random = rng or random.Random()
        self._state = LinkState.DISCONNECTED
        self._client: UpstreamClient | None = None
        #: What the last upstream session offered (kept while offline): the server side
        #: promises clients only what the upstream can carry out (CREATE-SPECIAL-USE,
        #: APPENDLIMIT).
        self.upstream_capabilities: frozenset[str] = frozenset()
        self._lock = defer.DeferredLock()
        self._watched: str | None = None
        self._on_change: Callable[[str], None] | None = None
        self._idle: _Idle | None = None
        self._last_done = float("-inf")
        self._change_call: Any = None
        self._idle_call: Any = None
        self._keepalive_call: Any = None
        self._reconnect_call: Any = None
        #: Consecutive failures: the backoff ceiling doubles with each.
        self._failures = 0
        self._connected_at = 0.0
        #: Whether the last connection or attempt failed (rather than being closed).
        self._suspect = False
        #: In BACKING_OFF: operations fail at once until this time, with this reason.
        self._retry_at = 0.0
        self._down_reason = ""
        self._attempt_waiters: list[defer.Deferred[UpstreamClient]] = []
        #: Called after every (re)connection: time to drain the outbox and resync.
        self.on_connected: Callable[[], object] | None = None
        #: True while something besides a watching client needs the upstream (the
        #: account's queued changes): the link then reconnects on its own, so a replay
        #: does not wait for the next client.
        self.keep_trying: Callable[[], bool] = lambda: False
        #: Called with the upstream's text when it refuses our credentials on a
        #: connection attempt (the password changed elsewhere): the account marks its
        #: replay paused. The link then stops reconnecting on its own, since retrying a
        #: refused password only earns a lockout; a client's next operation may try.
        self.on_credentials_refused: Callable[[str], object] | None = None
        self._credentials_refused = False
        #: See CLIENT_WAIT_SECONDS.
        self.client_wait = CLIENT_WAIT_SECONDS
        #: Operations other than spare ones waiting for the link or holding it, and
        #: when the last of them ended (see SPARE_QUIET_SECONDS).
        self._pressing = 0
        self._pressed_until = float("-inf")
        #: Until when spare work need not wait for a quiet link (SPARE_BURST_SECONDS).
        self._spare_free_until = float("-inf")

    @property
    def connector(self) -> Connector:
        """How connections are opened (the account's watcher opens its own the same way)."""
        return self._connector

    @property
    def state(self) -> LinkState:
        return self._state

    def _set_state(self, state: LinkState) -> None:
        if self._state is LinkState.CLOSED:
            return  # closing is final: late events of the old connection change nothing
        if state is not self._state:
            log.debug("upstream link %s -> %s", self._state.value, state.value)
            self._state = state

    # the one way in ----------------------------------------------------------

    async def use(
        self,
        operation: Callable[[UpstreamClient], Awaitable[T]],
        *,
        background: bool = False,
        reads_only: bool = False,
        spare: bool = False,
    ) -> T:
        """Run operation with the connection to itself; reconnect first if needed.

        Raises UpstreamUnreachable at once while the link is backing off,
        UpstreamUnavailable when the connection fails during the operation, and (unless
        ``background``) UpstreamBusy when another operation kept the link for longer
        than ``client_wait`` seconds.

        ``reads_only``: the operation changes nothing upstream (EXAMINE, FETCH of
        content, SEARCH). Its first command then follows IDLE's DONE at once, instead of
        a round trip later, and runs again on a new connection if the old one closed as
        IDLE ended.

        ``spare``: nobody waits for it (implies ``background``); it waits for a quiet
        link first (SPARE_QUIET_SECONDS).
        """
        if spare:
            await self._spare_turn()
            return await self._use(operation, True, reads_only)
        self._pressing += 1
        try:
            return await self._use(operation, background, reads_only)
        finally:
            self._pressing -= 1
            self._pressed_until = self.reactor.seconds()

    async def _spare_turn(self) -> None:
        """Wait until no other operation has wanted the link for SPARE_QUIET_SECONDS,
        at most SPARE_AT_LATEST_SECONDS (then spare work goes on without waiting for
        SPARE_BURST_SECONDS)."""
        latest = self.reactor.seconds() + SPARE_AT_LATEST_SECONDS
        while True:
            now = self.reactor.seconds()
            if now < self._spare_free_until:
                return
            quiet_from = now if self._pressing else self._pressed_until
            if now >= quiet_from + SPARE_QUIET_SECONDS:
                return
            if now >= latest:
                self._spare_free_until = now + SPARE_BURST_SECONDS
                return
            wake = min(quiet_from + SPARE_QUIET_SECONDS, latest)
            await task.deferLater(self.reactor, wake - now, lambda: None)

    async def _use(
        self,
        operation: Callable[[UpstreamClient], Awaitable[T]],
        background: bool,
        reads_only: bool,
    ) -> T:
        acquired = self._lock.acquire()
        if not background and not acquired.called:
            await self._wait_turn(acquired)
        else:
            await acquired
        try:
            if not (reads_only and self._end_idle_pipelined()):
                await self._leave_idle()
            client = await self._connected()
            try:
                return await self._run_on(client, operation)
            except ClosedAsIdleEnded:
                return await self._run_on(await self._connected(), operation)
        finally:
            self._last_done = self.reactor.seconds()
            self._lock.release()
            self._schedule_idle()

    def quiet_for(self) -> float:
        """Seconds since the last operation ended (0 while one runs): how long the link
        has had nothing to do, for work that should not get in a client's way."""
        if self._lock.locked:
            return 0.0
        return self.reactor.seconds() - self._last_done

    async def _run_on(
        self, client: UpstreamClient, operation: Callable[[UpstreamClient], Awaitable[T]]
    ) -> T:
        try:
            return await operation(client)
        except UpstreamUnavailable as exc:
            self._failed(client, str(exc))
            raise
        except _MALFORMED as exc:
            # An answer that parsed as IMAP but not as what was asked for (a FETCH
            # without a UID, FLAGS that are not a list): the connection is no longer
            # trusted, and for the caller it is as if the link broke mid-command.
            log.warning("upstream answer not understood: %s", exc)
            log.debug("where the upstream answer was not understood", exc_info=True)
            client.protocol.broken = True
            self._failed(client, f"upstream sent a malformed answer: {exc}")
            raise UpstreamUnavailable(f"upstream sent a malformed answer: {exc}") from exc

    async def _wait_turn(self, acquired: defer.Deferred[Any]) -> None:
        """A client's wait for the link: as long as the operation ahead is seen to
        progress (the upstream answers, so the link is busy, not dead), up to
        BUSY_MAX_SECONDS; after ``client_wait`` seconds without a byte moving, or past
        that cap, UpstreamBusy (nothing was sent; the replica answers)."""
        started = self.reactor.seconds()
        refusal: list[UpstreamBusy] = []

        def look() -> None:
            now = self.reactor.seconds()
            client = self._client
            moved = client.protocol.last_progress if client is not None else started
            silent = now - max(moved, started)
            if silent >= self.client_wait or now - started >= BUSY_MAX_SECONDS:
                refusal.append(
                    UpstreamBusy(
                        "the upstream link is busy with another operation "
                        f"(waited {now - started:.0f} s, {silent:.0f} s without progress)"
                    )
                )
                acquired.cancel()

        watch = task.LoopingCall(look)
        watch.clock = self.reactor
        watch.start(BUSY_POLL_SECONDS, now=False)
        try:
            await acquired
        except defer.CancelledError:
            raise refusal[0] from None
        finally:
            if watch.running:
                watch.stop()

    async def use_within(
        self, operation: Callable[[UpstreamClient], Awaitable[T]], seconds: float
    ) -> T:
        """``use(operation)`` for a client that must hear back within seconds (a
        command the upstream may think about silently, such as a text SEARCH, whose
        stall would otherwise be noticed only after PATIENT_SECONDS). Past that bound
        UpstreamBusy is raised, so the replica answers; the operation goes on, its
        answer unused, and the link's own stall detection ends it if the upstream is
        gone."""
        answered: defer.Deferred[T] = defer.Deferred()

        def settle(result: object) -> None:
            if not answered.called:
                answered.callback(result)  # type: ignore[arg-type]  # a Failure errs

        defer.ensureDeferred(self.use(operation)).addBoth(settle)
        timer = self.reactor.callLater(
            seconds,
            settle,
            Failure(UpstreamBusy(f"the upstream did not answer within {seconds:g} s")),
        )
        try:
            return await answered
        finally:
            if timer.active():
                timer.cancel()

    async def _connected(self) -> UpstreamClient:
        if self._state is LinkState.CLOSED:
            raise UpstreamUnreachable("the upstream link is closed")
        client = self._client
        if client is not None and client.protocol.usable:
            return client
        if self._suspect and (
            self._state is LinkState.CONNECTING
            or (self._state is LinkState.BACKING_OFF and self.reactor.seconds() < self._retry_at)
        ):
            # Offline answers fast: don't make every command wait for a connect attempt.
            # Work queued since the last failure (an offline change) may now want the
            # link back on its own: make sure the next attempt is scheduled.
            if (
                self._state is LinkState.BACKING_OFF
                and (self._reconnect_call is None or not self._reconnect_call.active())
                and self._wanted()
            ):
                self._schedule_reconnect(max(self._retry_at - self.reactor.seconds(), 0.0))
            raise UpstreamUnreachable(self._down_reason)
        wait = SUSPECT_WAIT_SECONDS if self._suspect else CONNECT_WAIT_SECONDS
        waiter: defer.Deferred[UpstreamClient] = defer.Deferred()
        waiter.addTimeout(wait, self.reactor)
        self._attempt_waiters.append(waiter)  # before starting: an attempt may end at once
        if self._state is not LinkState.CONNECTING:
            self._start_attempt()
        try:
            return await waiter
        except defer.TimeoutError:
            raise UpstreamUnreachable(
                f"no connection to {self.address.url()} within {wait:.0f} s; still trying"
            ) from None

    # connecting ----------------------------------------------------------------

    def _start_attempt(self) -> None:
        self._cancel(self._reconnect_call)
        self._reconnect_call = None
        self._set_state(LinkState.CONNECTING)
        defer.ensureDeferred(self._attempt()).addErrback(
            lambda f: log.error("upstream connection attempt failed unexpectedly: %s", f.value)
        )

    async def _attempt(self) -> None:
        try:
            client = await self._connector(
                self.reactor,
                self.address,
                self.username,
                self.password,
                self.ca_file,
                timeout=CONNECT_TIMEOUT_SECONDS,
                mechanism=self.mechanism,
            )
        except Exception as exc:
            if not isinstance(exc, UpstreamError):
                log.exception("unexpected error connecting to the upstream")
                exc = UpstreamUnreachable(f"cannot connect to {self.address.url()}: {exc}")
            if isinstance(exc, AuthenticationFailed):
                self._refused_credentials(exc)
            if self._state is not LinkState.CLOSED:
                self._back_off(str(exc))
            self._settle_waiters(Failure(exc))
            return
        self._credentials_refused = False
        if self._state is LinkState.CLOSED:
            self._settle_waiters(Failure(UpstreamUnreachable("the upstream link is closed")))
            await client.logout()
            return
        client.protocol.limit_messages(self.max_message)
        client.protocol.on_untagged = self._untagged
        client.protocol.closed.addCallback(lambda _: self._lost(client)).addErrback(
            lambda f: log.error("handling a lost upstream connection failed: %s", f.value)
        )
        self._client = client
        self.upstream_capabilities = frozenset(client.capabilities)
        self._connected_at = self.reactor.seconds()
        self._suspect = False
        self._set_state(LinkState.READY)
        self._settle_waiters(client)
        if self.on_connected is not None:
            self.reactor.callLater(0, self.on_connected)
        self._schedule_idle()

    def _settle_waiters(self, outcome: UpstreamClient | Failure) -> None:
        waiters, self._attempt_waiters = self._attempt_waiters, []
        for waiter in waiters:
            if waiter.called:
                continue  # it gave up waiting; the attempt went on without it
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    def _back_off(self, reason: str) -> None:
        """The upstream failed: fail fast for a while, retry later with jittered backoff."""
        ceiling = min(RECONNECT_MAX_SECONDS, RECONNECT_MIN_SECONDS * 2**self._failures)
        delay = ceiling / 2 + self._random.uniform(0, ceiling / 2)
        self._failures += 1
        self._suspect = True
        self._retry_at = self.reactor.seconds() + min(delay, FAIL_FAST_SECONDS)
        self._down_reason = reason
        self._set_state(LinkState.BACKING_OFF)
        log.info("upstream unavailable (%s); next attempt in %.1f s", reason, delay)
        self._schedule_reconnect(delay)

    def _refused_credentials(self, exc: AuthenticationFailed) -> None:
        self._credentials_refused = True
        if self.on_credentials_refused is None:
            return
        try:
            self.on_credentials_refused(exc.text)
        except Exception:
            log.exception("reporting refused upstream credentials failed")

    def _wanted(self) -> bool:
        """Whether to keep trying to get back: a client watches a mailbox, or work is
        waiting for the upstream (queued changes to replay) -- but not with credentials
        the upstream has refused."""
        if self._credentials_refused:
            return False
        if self._watched is not None:
            return True
        try:
            return bool(self.keep_trying())
        except Exception:
            log.exception("deciding whether to reconnect failed; trying anyway")
            return True

    def _schedule_reconnect(self, delay: float) -> None:
        """While the link is wanted, keep trying to get back."""
        if self._state is LinkState.CLOSED or not self._wanted():
            return
        self._cancel(self._reconnect_call)
        self._reconnect_call = self.reactor.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        self._reconnect_call = None
        if (
            self._state
            in (
                LinkState.CLOSED,
                LinkState.CONNECTING,
                LinkState.READY,
                LinkState.IDLING,
            )
            or not self._wanted()
        ):
            return
        self._start_attempt()

    def _failed(self, client: UpstreamClient, reason: str) -> None:
        """This connection ended under an operation or IDLE: drop it. If we found it
        broken (stalled, garbage, too much data), back off; if the server merely
        closed it (a BYE, say after a selected mailbox was deleted), reconnect."""
        client.protocol.abort()
        if self._client is not client:
            return  # already handled, or replaced
        self._client = None
        self._idle = None
        self._cancel(self._keepalive_call)
        if client.protocol.broken:
            if self.reactor.seconds() - self._connected_at >= HEALTHY_SECONDS:
                self._failures = 0
            self._back_off(reason)
        else:
            self._disconnected()

    def _lost(self, client: UpstreamClient) -> None:
        """The connection closed while nothing was running on it."""
        self._failed(client, "connection to the upstream was lost")

    def _disconnected(self) -> None:
        """The server closed the connection. The next operation reconnects at once; the
        background retries back off if connections keep closing soon after login."""
        if self._state is LinkState.CLOSED:
            return
        if self.reactor.seconds() - self._connected_at < HEALTHY_SECONDS:
            self._failures += 1
        else:
            self._failures = 0
        log.info("upstream connection lost")
        self._suspect = False
        self._set_state(LinkState.DISCONNECTED)
        ceiling = min(RECONNECT_MAX_SECONDS, RECONNECT_MIN_SECONDS * 2**self._failures)
        self._schedule_reconnect(ceiling / 2 + self._random.uniform(0, ceiling / 2))

    @property
    def known_down(self) -> bool:
        """The last attempt failed and the link is backing off (or retrying): a new
        attempt now would most likely wait out its timeout. Not so when the upstream
        answered and refused our credentials: it is reachable, and a login with other
        credentials must be checked there, not against the stored verifier."""
        return (
            self._suspect
            and not self._credentials_refused
            and self._state in (LinkState.BACKING_OFF, LinkState.CONNECTING)
        )

    @property
    def logged_in(self) -> bool:
        """An upstream connection is open and was logged in with our credentials."""
        return self._client is not None and self._client.protocol.connected_ok

    # watching ------------------------------------------------------------------

    @property
    def watched(self) -> str | None:
        return self._watched

    def watch(self, mailbox: str | None, on_change: Callable[[str], None]) -> None:
        """IDLE on mailbox whenever the link is free; call on_change(mailbox) on news.

        A connected link opens the mailbox now rather than when IDLE is due: a client
        that just selected it reads from it next, and its first body read paid the
        EXAMINE's round trip (a repeat session at 50 ms, traced: 105 ms for that read
        against 52 ms for the next). Leaving IDLE elsewhere goes in the same write."""
        self._on_change = on_change
        if mailbox == self._watched:
            return
        self._watched = mailbox
        if mailbox is not None and self._state in (LinkState.READY, LinkState.IDLING):
            self._background(
                self.use(partial(_open, mailbox), background=True, reads_only=True),
                "opening the watched mailbox",
            )
        elif self._idle is not None:
            # Watching nothing: leave IDLE now.
            self._background(self.use(_nothing, background=True), "leaving IDLE")
        elif mailbox is not None and self._state is LinkState.BACKING_OFF:
            self._schedule_reconnect(max(self._retry_at - self.reactor.seconds(), 0.0))
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
            and self._state is LinkState.READY
            and not self._lock.locked
            and self._idle is None
        ):
            self._cancel(self._idle_call)
            self._idle_call = self.reactor.callLater(IDLE_DELAY_SECONDS, self._idle_due)

    def _idle_due(self) -> None:
        self._idle_call = None
        self._background(self._enter_idle(), "IDLE")

    async def _enter_idle(self) -> None:
        if self._lock.locked or self._idle is not None or self._watched is None:
            return
        await self._lock.acquire()
        client = self._client
        try:
            if client is None or not client.protocol.usable or not client.has("IDLE"):
                return
            await client.ensure_selected(self._watched)
            started: defer.Deferred[None] = defer.Deferred()

            def on_continuation(_: ContinuationRequest) -> None:
                client.protocol.pause_watchdog()  # IDLE is quiet until there is news
                if not started.called:
                    started.callback(None)

            ended: defer.Deferred[BaseException | None] = defer.Deferred()

            def finished(outcome: Result | Failure) -> None:
                failure = outcome if isinstance(outcome, Failure) else None
                if not started.called:
                    started.errback(failure or UpstreamUnavailable("IDLE ended at once"))
                ended.callback(None if failure is None else failure.value)
                if self._idle is None or self._idle.ended is not ended:
                    return  # an operation is leaving IDLE and sees the outcome
                # Nobody was leaving IDLE: the upstream ended it, or the link broke.
                if failure is not None:
                    self._failed(client, str(failure.value))
                else:
                    self._idle = None
                    self._set_state(LinkState.READY)
                    self._schedule_idle()

            defer.ensureDeferred(
                client.protocol.run(
                    lambda tag: [[f"{tag} IDLE\r\n".encode()]],
                    on_continuation,
                    timeout=KEEPALIVE_SECONDS + 60,
                    patience=IDLE_SWITCH_SECONDS,
                    deadline=IDLE_SWITCH_SECONDS,
                )
            ).addBoth(finished)
            await started
            self._idle = _Idle(client, ended)
            self._set_state(LinkState.IDLING)
            self._cancel(self._keepalive_call)
            self._keepalive_call = self.reactor.callLater(KEEPALIVE_SECONDS, self._keepalive, ended)
        except UpstreamUnavailable as exc:
            if client is not None:
                self._failed(client, f"entering IDLE failed: {exc}")
        except UpstreamError as exc:
            log.info("upstream IDLE not possible: %s", exc)
        finally:
            self._lock.release()

    def _keepalive(self, ended: defer.Deferred[BaseException | None]) -> None:
        """Leave IDLE and NOOP: proves the link alive, and renews IDLE (RFC 2177)."""
        self._keepalive_call = None
        if self._idle is not None and self._idle.ended is ended:
            self._background(self.use(_noop, background=True), "keepalive")

    def _end_idle_pipelined(self) -> bool:
        """End IDLE without waiting for its answer (UpstreamProtocol.end_idle); False
        when there is no IDLE to end so. How IDLE ended shows in the next command on
        that connection (ClosedAsIdleEnded, or the connection's failure)."""
        idle = self._idle
        if idle is None or self._client is not idle.client or not idle.client.protocol.usable:
            return False
        self._end_idle(idle)
        return True

    async def _leave_idle(self) -> None:
        """End IDLE; raises UpstreamUnavailable when the upstream does not confirm in
        time or answers wrongly (a connection the server just closed is not an error)."""
        idle = self._idle
        if idle is None:
            return
        self._end_idle(idle)
        client = idle.client
        error = await idle.ended
        if error is not None:
            reason = f"leaving IDLE failed: {error}"
            self._failed(client, reason)
            if client.protocol.broken:
                raise UpstreamUnavailable(reason)
            # The server closed the connection (a BYE): the operation reconnects.

    def _end_idle(self, idle: _Idle) -> None:
        """DONE for idle (if its connection still takes it), watched for IDLE's answer."""
        self._idle = None
        self._cancel(self._keepalive_call)
        client = idle.client
        if self._client is client:
            self._set_state(LinkState.READY)
        if client.protocol.usable:
            client.protocol.end_idle()
            client.protocol.watch_progress(IDLE_SWITCH_SECONDS, deadline=IDLE_SWITCH_SECONDS)

    # closing -------------------------------------------------------------------

    async def close(self) -> None:
        self._set_state(LinkState.CLOSED)
        self._watched = None
        for call in (
            self._reconnect_call,
            self._keepalive_call,
            self._change_call,
            self._idle_call,
        ):
            self._cancel(call)
        await self._lock.acquire()
        try:
            try:
                await self._leave_idle()
            except UpstreamError:
                pass
            if self._client is not None:
                client, self._client = self._client, None
                await client.logout()
        finally:
            self._lock.release()

    # helpers -------------------------------------------------------------------

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()

    @staticmethod
    def _background(work: Awaitable[object], what: str) -> None:
        def failed(failure: Failure) -> None:
            if failure.check(UpstreamError):
                log.info("%s: %s", what, failure.value)
            else:
                log.error("%s failed: %s", what, failure.getTraceback())

        defer.ensureDeferred(work).addErrback(failed)  # type: ignore[arg-type]


async def _nothing(client: UpstreamClient) -> None:
    return None


async def _noop(client: UpstreamClient) -> None:
    await client.noop()


async def _open(name: str, client: UpstreamClient) -> None:
    """EXAMINE name unless the connection has it open already (a client's SELECT that
    synced it did). One the upstream refuses (gone meanwhile) is the next sync's to
    find; IDLE would have met the same."""
    try:
        await client.ensure_selected(name)
    except UpstreamRefused as exc:
        log.info("opening %r to watch it: %s", name, exc)
