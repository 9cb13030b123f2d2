"""An account's second upstream connection: it only listens for news of the mailboxes
clients have selected, so watching never waits behind (or delays) a client's command.

The link (``link.py``) can IDLE on one mailbox only, and only while no operation runs.
Clients may have several mailboxes selected at once (phone on INBOX, laptop on a
list folder); news of each must reach them within about a second. This connection
gives that, staying within RFC 4549 §5.3's "about two connections per account" and
never selecting a mailbox (so no mailbox is ever selected on two connections, and
this one never ENABLEs QRESYNC: it hears neither EXPUNGE nor VANISHED, only STATUS):

- **NOTIFY** (RFC 5465), when the upstream offers it: ``NOTIFY SET (mailboxes (A B …)
  (MessageNew MessageExpunge FlagChange))``. The upstream then sends ``* STATUS name
  (…)`` whenever one of them changes, at any time (Dovecot also outside IDLE); each
  becomes ``on_change(name)``, which resyncs that mailbox over the link. A NOOP every
  ``KEEPALIVE_SECONDS`` proves the connection alive. Detection bound: the upstream's
  own notification delay (Dovecot: about 0.5 s) plus ``COALESCE_SECONDS``.
- **STATUS polling** otherwise: every ``POLL_SECONDS``, STATUS (MESSAGES UIDNEXT
  UIDVALIDITY UNSEEN, HIGHESTMODSEQ with CONDSTORE) of each watched mailbox on this
  connection; a mailbox whose answer moved gets ``on_change``. The link still IDLEs
  on the most recently selected mailbox, so that one hears at IDLE speed; the others
  within ``POLL_SECONDS`` plus a round trip per mailbox.

**Freshness.** With NOTIFY, the watcher can watch every mailbox of the account, not
only the selected ones (``watch(selected, everything)``): ``covered_since(name)`` then
says from when news of a mailbox is certain to be told (while the connection answered
its last NOOP within ``ALIVE_FOR_SECONDS``), so a replica synced after that
moment is as fresh as the upstream's notification delay and STATUS or SELECT can be
answered from it without a round trip. STATUS polling covers only the selected
mailboxes (polling every folder every few seconds would cost more than it saves), and
covers nothing for freshness: without NOTIFY every STATUS and SELECT still asks.
Watching everything also asks NOTIFY for MailboxName and SubscriptionChange events
(``* LIST`` when a mailbox is created, renamed or deleted, or a subscription changes,
anywhere in the personal namespace): ``list_covered_since()`` then says from when the
folder list is certain to be told of, and each ``* LIST`` becomes ``on_list_change()``,
so a LIST can be answered from the replica too.

Failures never reach clients: a connection that fails or is refused is retried after
a backoff (``RETRY_MIN_SECONDS`` doubling to ``RETRY_MAX_SECONDS``) while any mailbox
is watched; nothing is connected while none is. Every Deferred here has an errback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure

from imapproxy.protocol import UntaggedData
from imapproxy.upstream.client import UpstreamClient, text
from imapproxy.upstream.connection import Untagged
from imapproxy.upstream.errors import UpstreamError, UpstreamRefused

if TYPE_CHECKING:
    from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)

#: Without NOTIFY, how often the watched mailboxes are polled with STATUS.
POLL_SECONDS = 2.0
#: With NOTIFY, a NOOP this often proves the quiet connection alive (and keeps the
#: server's autologout, at least 30 minutes by RFC 3501, far away).
KEEPALIVE_SECONDS = 60.0
#: NOTIFY's cover counts only this long after the connection last answered: a
#: connection that died quietly (a laptop that slept, a NAT that forgot it) must not
#: keep STATUS answered from a replica nobody keeps current.
ALIVE_FOR_SECONDS = KEEPALIVE_SECONDS + 15.0
#: News of one mailbox arriving this close together becomes one resync.
COALESCE_SECONDS = 0.1
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
#: A connection that lived this long was healthy: its end starts the backoff afresh.
HEALTHY_SECONDS = 60.0
#: How long connecting (TCP, TLS, login) may take.
CONNECT_TIMEOUT_SECONDS = 20.0
#: How long a connection made ahead of need (``prepare``) waits for something to watch.
PREPARED_SECONDS = 30.0
#: How long ``until_covered`` waits at most for a NOTIFY SET on its way.
COVER_WAIT_SECONDS = 1.0


class MailboxWatcher:
    """Tells ``on_change(name)`` when a watched mailbox changed upstream."""

    def __init__(
        self,
        reactor: Any,
        link: UpstreamLink,
        on_change: Callable[[str], None],
        *,
        poll_seconds: float = POLL_SECONDS,
        on_covered: Callable[[frozenset[str], dict[str, dict[str, int]]], None] | None = None,
        on_list_change: Callable[[], None] | None = None,
    ) -> None:
        self.reactor = reactor
        #: Where the address and credentials come from (a new login may replace it).
        self.link = link
        self.on_change = on_change
        #: Told the names NOTIFY now covers, with the upstream's STATUS of each as the
        #: SET found it, so replicas synced before can catch up (or, matching it, need
        #: not).
        self.on_covered = on_covered
        #: Told (coalesced) that the folder list or subscriptions changed upstream.
        self.on_list_change = on_list_change
        self.poll_seconds = poll_seconds
        self._names: frozenset[str] = frozenset()
        self._everything: frozenset[str] = frozenset()
        #: Name -> reactor time from which NOTIFY is certain to tell us of its changes.
        self._covered: dict[str, float] = {}
        #: When the current connection last answered a command.
        self._alive_at = 0.0
        #: Name -> reactor time news of it last arrived (before coalescing).
        self._heard: dict[str, float] = {}
        #: From when NOTIFY reports changes of the folder list (None: it does not now).
        self._list_covered: float | None = None
        #: When news of the folder list last arrived.
        self._list_heard: float | None = None
        #: While a NOTIFY SET runs: its ``* STATUS`` responses state each mailbox, they
        #: are no news.
        self._setting = False
        #: While a connection is being made or a NOTIFY SET runs (until the SET answers,
        #: or the attempt fails): a cover is on its way.
        self._covering = False
        #: Told (fired) when a cover arrives or stops being on its way.
        self._cover_waiters: list[defer.Deferred[None]] = []
        #: Until when a connection made ahead (``prepare``) stays with nothing to watch.
        self._prepared_until = 0.0
        #: Whether the upstream offers NOTIFY (None until the first connection says).
        self._notify_offered: bool | None = None
        self._closed = False
        self._running = False
        self._wake: defer.Deferred[None] | None = None
        self._pending: dict[str, Any] = {}
        self._client: UpstreamClient | None = None
        #: Which way news is learned on the current connection ("notify" or "poll").
        self.mode: str | None = None

    @property
    def names(self) -> frozenset[str]:
        """The mailboxes watched on the current kind of connection."""
        if self._notify_offered is False:
            return self._names
        return self._names | self._everything

    def covered_since(self, name: str) -> float | None:
        """From when every change of name upstream is certain to be told (None: it is
        not watched that way now, so the replica may lag without our knowing)."""
        if self.reactor.seconds() - self._alive_at > ALIVE_FOR_SECONDS:
            return None
        return self._covered.get(name)

    def heard_at(self, name: str) -> float | None:
        """When news of name last arrived (its resync may still be coming)."""
        return self._heard.get(name)

    def cover_coming(self, name: str) -> bool:
        """Whether a NOTIFY SET that will cover name is on its way: the connection that
        sends it is being made or its SET runs, and name is among what it will watch."""
        return (
            self._covering
            and not self._closed
            and self._notify_offered is not False
            and name in self.names
            and name not in self._covered
        )

    async def until_covered(self, seconds: float = COVER_WAIT_SECONDS) -> None:
        """Wait until the cover on its way arrives, stops being on its way, or seconds
        pass, whichever comes first.

        A new session asks each folder's STATUS moments after logging in, while the
        watcher is still logging in or setting NOTIFY. The SET's answer states every
        folder's STATUS as the upstream has it then, after the client asked, which makes
        a replica that matches it fresh; asking the upstream instead costs a round trip
        on the link, where it waits behind whatever the link is doing (a large folder's
        first sync)."""
        if not self._covering:
            return
        waiter: defer.Deferred[None] = defer.Deferred()
        self._cover_waiters.append(waiter)
        timer = self.reactor.callLater(seconds, self._release_cover_waiters, [waiter])
        try:
            await waiter
        finally:
            if timer.active():
                timer.cancel()

    def _cover_settled(self) -> None:
        """The cover arrived, or will not come on this attempt: nobody waits for it."""
        self._covering = False
        self._release_cover_waiters(self._cover_waiters)

    def _release_cover_waiters(self, waiters: list[defer.Deferred[None]]) -> None:
        for waiter in list(waiters):
            if waiter in self._cover_waiters:
                self._cover_waiters.remove(waiter)
            if not waiter.called:
                waiter.callback(None)

    def list_covered_since(self) -> float | None:
        """From when every change of the folder list and subscriptions upstream is
        certain to be told (None: not watched that way now)."""
        if self.reactor.seconds() - self._alive_at > ALIVE_FOR_SECONDS:
            return None
        return self._list_covered

    def list_heard_at(self) -> float | None:
        """When news of the folder list last arrived (its refresh may still be coming)."""
        return self._list_heard

    def watch(
        self,
        names: set[str] | frozenset[str],
        everything: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Watch exactly these mailboxes from now on (none: let the connection go):
        names are what clients have selected; everything, all the account's upstream
        mailboxes, watched too where NOTIFY makes that cheap."""
        names, everything = frozenset(names), frozenset(everything)
        if (names, everything) == (self._names, self._everything) or self._closed:
            return
        self._names, self._everything = names, everything
        names = self.names
        if names:
            self._prepared_until = 0.0  # needed now: from here on it lives while watching
        if self._running:
            self._wakeup()  # the loop re-reads the names now
        elif names:
            self._start()

    def prepare(self) -> None:
        """Connect and log in now, with nothing to watch yet, where NOTIFY will cover
        every folder once the folder list is known.

        A new session lists the folders and asks each one's STATUS within moments of
        logging in, and until NOTIFY covers a folder its STATUS asks the upstream. A
        watcher that connected only after the list was in sent its NOTIFY SET three
        round trips later (connection, greeting, login): in a cold session at 50 ms,
        the STATUS of two folders went upstream meanwhile. Connected ahead, the SET
        follows the list by one round trip. Unused, the connection goes after
        PREPARED_SECONDS."""
        if self._closed or self.names:
            return
        self._prepared_until = self.reactor.seconds() + PREPARED_SECONDS
        if not self._running:
            self._start()

    def _start(self) -> None:
        self._running = True
        defer.ensureDeferred(self._run()).addErrback(self._crashed)

    def _wanted(self) -> bool:
        """Whether to keep a connection: mailboxes to watch, or one made ahead."""
        return bool(self.names) or self.reactor.seconds() < self._prepared_until

    async def close(self) -> None:
        self._closed = True
        self._names = self._everything = frozenset()
        self._uncover()
        self._cover_settled()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        self._wakeup()
        client, self._client = self._client, None
        if client is not None:
            await client.logout()

    # the loop ----------------------------------------------------------------

    def _crashed(self, failure: Failure) -> None:
        self._running = False
        log.error("upstream watcher failed: %s", failure.getTraceback())

    async def _run(self) -> None:
        failures = 0
        try:
            while self._wanted() and not self._closed:
                self._covering = True
                try:
                    client = await self._connect()
                except UpstreamError as exc:
                    self._cover_settled()
                    if self._closed:
                        return
                    failures += 1
                    delay = min(RETRY_MAX_SECONDS, RETRY_MIN_SECONDS * 2 ** (failures - 1))
                    log.info("upstream watcher cannot connect (%s); next try in %.0f s", exc, delay)
                    await self._sleep(delay)
                    continue
                started = self.reactor.seconds()
                try:
                    await self._serve(client)
                    failures = 0
                except UpstreamError as exc:
                    healthy = self.reactor.seconds() - started > HEALTHY_SECONDS
                    failures = 1 if healthy else failures + 1
                    # Closing ends it on purpose: no news, and by then the proxy may
                    # have logged that it stopped (its last line).
                    if not self._closed:
                        log.info("upstream watcher connection ended: %s", exc)
                finally:
                    if self._client is client:
                        self._client = None
                    self.mode = None
                    self._uncover()
                    self._cover_settled()
                    await client.logout()
                if self._wanted() and not self._closed and failures:
                    delay = min(RETRY_MAX_SECONDS, RETRY_MIN_SECONDS * 2 ** (failures - 1))
                    await self._sleep(delay)
        finally:
            self._running = False
        if self.names and not self._closed:  # watched again just as the loop ended
            self._start()

    async def _connect(self) -> UpstreamClient:
        link = self.link
        client = await link.connector(
            self.reactor,
            link.address,
            link.username,
            link.password,
            link.ca_file,
            timeout=CONNECT_TIMEOUT_SECONDS,
            mechanism=link.mechanism,
        )
        if self._closed:
            await client.logout()
            raise _Closed("watcher closed")
        self._client = client
        return client

    async def _serve(self, client: UpstreamClient) -> None:
        """Watch over this connection until it fails or nothing is left to watch."""
        notify = client.has("NOTIFY")
        self._notify_offered = notify
        self.mode = "notify" if notify else "poll"
        client.protocol.on_untagged = self._untagged if notify else None

        def lost(_: object) -> None:
            if self._client is client:  # not an old connection closing late
                self._wakeup()

        client.protocol.closed.addBoth(lost)
        if notify:
            log.info("upstream watcher: NOTIFY for the mailboxes clients have selected")
        else:
            self._cover_settled()
            log.info("upstream watcher: STATUS poll every %g s (no NOTIFY)", self.poll_seconds)
        told: frozenset[str] | None = None
        last: dict[str, dict[str, int]] = {}
        while self._wanted() and not self._closed:
            names = self.names
            if not names:  # connected ahead (prepare): wait for something to watch
                await self._sleep(max(self._prepared_until - self.reactor.seconds(), 0.0))
            elif notify:
                if names != told:
                    try:
                        if told is not None:
                            # Dovecot 2.3 falls back to its 30 s check for a SET that
                            # replaces another; after NONE it watches at once again.
                            self._uncover()
                            await client.notify(())
                        folder_list = bool(self._everything)
                        self._setting = self._covering = True
                        try:
                            statuses = await client.notify(sorted(names), folder_list=folder_list)
                        finally:
                            self._setting = False
                    except UpstreamRefused as exc:
                        log.info(
                            "upstream watcher: STATUS poll every %g s (NOTIFY refused: %s)",
                            self.poll_seconds,
                            exc,
                        )
                        notify, self.mode = False, "poll"
                        self._notify_offered = False
                        self._cover_settled()
                        client.protocol.on_untagged = None
                        continue
                    told = names
                    now = self._alive_at = self.reactor.seconds()
                    self._covered = dict.fromkeys(names, now)
                    self._list_covered = now if folder_list else None
                    try:
                        if self.on_covered is not None:
                            self.on_covered(names, statuses)
                    finally:
                        self._cover_settled()
                    log.debug("upstream NOTIFY set for %d mailboxes", len(names))
                elif self.reactor.seconds() - self._alive_at >= KEEPALIVE_SECONDS:
                    await client.noop()
                    self._alive_at = self.reactor.seconds()
                # Woken with the names the SET already covers (a client selected a
                # folder of the account): nothing to ask until the keepalive is due.
                await self._sleep(self._alive_at + KEEPALIVE_SECONDS - self.reactor.seconds())
            else:
                last = {n: s for n, s in last.items() if n in names}
                for name in sorted(names):
                    try:
                        status = await client.status(name, client.watch_items())
                    except UpstreamRefused as exc:  # gone upstream: the next sync shows it
                        log.debug("STATUS of a watched mailbox refused: %s", exc)
                        continue
                    if name in last and last[name] != status:
                        self._news(name)
                    last[name] = status
                await self._sleep(self.poll_seconds)
            if not client.protocol.usable:
                raise _Lost("connection to the upstream was lost")

    # news --------------------------------------------------------------------

    def _uncover(self) -> None:
        self._covered.clear()
        self._list_covered = None

    def _untagged(self, event: Untagged) -> None:
        if not isinstance(event, UntaggedData):
            return
        if event.name == "STATUS" and event.values and not self._setting:
            self._news(text(event.values[0]))
        elif event.name in ("LIST", "LSUB"):
            self._list_news()

    def _list_news(self) -> None:
        self._list_heard = self.reactor.seconds()
        call = self._pending.get(_LIST)
        if call is not None and call.active():
            return
        self._pending[_LIST] = self.reactor.callLater(COALESCE_SECONDS, self._tell_list)

    def _tell_list(self) -> None:
        self._pending.pop(_LIST, None)
        if self.on_list_change is not None and not self._closed:
            self.on_list_change()

    def _news(self, name: str) -> None:
        if name not in self.names:
            return
        self._heard[name] = self.reactor.seconds()
        call = self._pending.get(name)
        if call is not None and call.active():
            return
        self._pending[name] = self.reactor.callLater(COALESCE_SECONDS, self._tell, name)

    def _tell(self, name: str) -> None:
        self._pending.pop(name, None)
        if name in self.names and not self._closed:
            self.on_change(name)

    # waiting -----------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Until seconds pass, the watched set changes, or the connection closes."""
        wake: defer.Deferred[None] = defer.Deferred()
        self._wake = wake
        timer = self.reactor.callLater(seconds, self._wakeup)
        try:
            await wake
        finally:
            if timer.active():
                timer.cancel()

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is None or wake.called:
            return
        self._wake = None
        wake.callback(None)


#: The key of the folder list's coalescing call in ``_pending`` (no mailbox is named
#: with a NUL).
_LIST = "\0list"


class _Closed(UpstreamError):
    pass


class _Lost(UpstreamError):
    pass
