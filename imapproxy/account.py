"""One logged-in account: its replica, its upstream link, its outbox, shared by its sessions.

Sessions of the same user (phone and laptop, two windows) share one AccountRuntime,
so they share one upstream connection and see each other's changes through the
notifier. Reads come from the replica; the upstream is asked only for what the
replica lacks, and when it cannot be reached the replica still answers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer

from imapproxy.link_status import LinkStatus
from imapproxy.metrics import METRICS
from imapproxy.notify import MailboxChange, Notifier
from imapproxy.outbox.replica import is_local
from imapproxy.outbox.runner import WAIT_SECONDS, Outbox
from imapproxy.store import Store, Tx, held, mailboxes, messages, subscriptions
from imapproxy.store.accounts import Account
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.sync.background import DEFAULT_INTERVAL, BackgroundSync
from imapproxy.sync.content import Fetched, Need, fetch_missing
from imapproxy.sync.mailbox_list import sync_mailbox_list, sync_subscriptions
from imapproxy.sync.mailboxes import (
    NEW_FOLDERS_AT_ONCE,
    FirstLook,
    sync_messages,
    sync_new_mailboxes,
)
from imapproxy.sync.prefetch import PolicyError, PrefetchPolicy
from imapproxy.types import BlobId, MailboxId
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import UpstreamBusy, UpstreamRefused, UpstreamUnavailable
from imapproxy.upstream.link import UpstreamLink
from imapproxy.upstream.watcher import POLL_SECONDS, MailboxWatcher

log = logging.getLogger(__name__)

#: Seconds between full background syncs of every folder; 0 turns them off.
SYNC_INTERVAL_ENV = "IMAPPROXY_SYNC_INTERVAL"
#: Once NOTIFY first covers the folder list, it is fetched once more when the link has
#: had nothing to do for this long (see _covered)...
LIST_REFRESH_DELAY = 1.0
#: ... or at the latest this long after the cover.
LIST_REFRESH_LATEST = 30.0


def prefetch_policy(configured: PrefetchPolicy | None = None) -> PrefetchPolicy:
    """The configured policy; the IMAPPROXY_PREFETCH_* variables, when set, override it
    (tests and one-off runs without a configuration file)."""
    if not any(k.startswith("IMAPPROXY_PREFETCH_") for k in os.environ):
        return configured or PrefetchPolicy()
    try:
        return PrefetchPolicy.from_environment()
    except PolicyError as exc:
        log.warning("prefetch settings ignored (%s): using the defaults", exc)
        return configured or PrefetchPolicy()


def sync_interval(configured: float = DEFAULT_INTERVAL) -> float:
    """The configured interval, or IMAPPROXY_SYNC_INTERVAL when set."""
    if SYNC_INTERVAL_ENV not in os.environ:
        return configured
    try:
        return float(os.environ[SYNC_INTERVAL_ENV])
    except ValueError:
        log.warning("%s is not a number of seconds: using %s", SYNC_INTERVAL_ENV, configured)
        return configured


@dataclass(frozen=True)
class MailboxStats:
    """What STATUS and SELECT report about a whole mailbox."""

    messages: int
    unseen: int
    size: int
    keywords: tuple[str, ...]
    first_unseen: int | None  # sequence number, in UID order


def _compute_stats(tx: Tx, mailbox: Mailbox) -> MailboxStats:
    tally = messages.flag_tally(tx, mailbox.account, mailbox.id)
    unseen = 0
    first_unseen: int | None = None
    keywords: set[bytes] = set()
    for flags, (first, many) in tally.by_flags.items():
        if not any(flag.upper() == b"\\SEEN" for flag in flags):
            unseen += many
            first_unseen = first if first_unseen is None else min(first, first_unseen)
        keywords.update(flag for flag in flags if not flag.startswith(b"\\"))
    names = sorted(keyword.decode() for keyword in keywords)
    return MailboxStats(tally.messages, unseen, tally.size, tuple(names), first_unseen)


class AccountRuntime:
    def __init__(
        self,
        reactor: Any,
        store: Store,
        notifier: Notifier,
        account: Account,
        link: UpstreamLink,
        write_wait: float = WAIT_SECONDS,
        *,
        prefetch: PrefetchPolicy | None = None,
        sync_every: float = DEFAULT_INTERVAL,
        poll_every: float = POLL_SECONDS,
        cache_limit: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.store = store
        # Kept in the store, so `imapproxy prefetch` beside this proxy respects it too.
        store.set_cache_limit(account.id, cache_limit)
        self.notifier = notifier
        self.account = account
        self.link = link
        self.outbox = Outbox(store, account, link, notifier, reactor, write_wait)
        #: How long a client's command waits for the upstream (an answer to its change,
        #: the link held by another operation, a replay) before the replica answers.
        self.write_wait = write_wait
        self.outbox.on_folder_refused = self._folder_refused
        self._listed = False
        self._stats: dict[int, tuple[tuple[int, int], MailboxStats]] = {}
        self._tracked: UpstreamClient | None = None
        #: Mailbox id -> reactor time its last successful sync began.
        self._synced_at: dict[int, float] = {}
        #: Never-synced mailboxes examined with another one's first sync, whose message
        #: lists did not all come: their own first sync goes on from there.
        self._first_looks: dict[MailboxId, FirstLook] = {}
        #: The upstream's STATUS of each mailbox as the last NOTIFY SET stated it.
        self._cover_statuses: dict[str, dict[str, int]] = {}
        #: When the last successful fetch of the folder list, and of the subscriptions
        #: without a mailbox, began (None: not since the link last came up).
        self._listed_at: float | None = None
        self._list_refresh: Any = None  # the delayed call of _refresh_list_if_stale
        self._subscriptions_at: float | None = None
        self.status = LinkStatus(reactor, store, account.id)
        #: News of every mailbox a client has selected, on a connection of its own.
        self.watcher = MailboxWatcher(
            reactor,
            link,
            self.request_sync,
            on_covered=self._covered,
            on_list_change=self._list_changed,
            poll_seconds=poll_every,
        )
        self.background = BackgroundSync(self, sync_interval(sync_every), prefetch_policy(prefetch))
        notifier.on_watch_change[account.id] = self._watch_changed
        self.attach(link)
        self.background.request_full()
        # The limit may have been lowered since the last run.
        reactor.callLater(0, self.trim_cache)

    def attach(self, link: UpstreamLink) -> None:
        """Use link from now on (a new login may bring new credentials)."""
        self.link = link
        link.client_wait = self.write_wait
        self.outbox.link = link
        self.watcher.link = link
        self.outbox.resume()
        link.on_connected = self._connected
        link.keep_trying = self._replay_waits
        link.on_credentials_refused = self.outbox.pause
        if self.outbox.pending():
            # Left over from before a restart or a lost connection: replay them now.
            self.reactor.callLater(0, self._connected)

    def _replay_waits(self) -> bool:
        """Queued changes the upstream could take now (not paused for new credentials)."""
        return bool(self.outbox.pending()) and self.outbox.paused() is None

    def _connected(self) -> None:
        """After every (re)connection: replay what is queued, then catch up on the
        watched mailbox (changes made while the link was down)."""

        self.status.went_online()
        # News may have been missed while the link was down: every mailbox asks again.
        self._synced_at.clear()
        self._listed_at = self._subscriptions_at = None
        if "NOTIFY" in self.link.upstream_capabilities:
            # The folder list and each folder's STATUS come next: covered sooner, they
            # are answered without a round trip each (watcher.prepare). A turn later:
            # the client's LOGIN answer, written as the link came up, goes out when the
            # reactor next polls, and a connection's setup (its TLS context: the CA
            # bundle) takes about 10 ms it would otherwise wait.
            self.reactor.callLater(0, self.watcher.prepare)

        async def catch_up() -> None:
            if self.outbox.pending():
                await self.outbox.drain()
            watched = self.link.watched
            if watched is not None:
                self.request_sync(watched)
            self.background.request_full()

        defer.ensureDeferred(catch_up()).addErrback(
            lambda f: log.warning("catching up after reconnect failed: %s", f.value)
        )

    def _folder_refused(self) -> None:
        """A queued folder change was refused: the mailbox list follows the upstream."""
        defer.ensureDeferred(self.refresh_mailboxes(force=True, background=True)).addErrback(
            lambda f: log.warning("mailbox list resync after a refusal failed: %s", f.value)
        )

    async def _replayed_first(self, waits: Callable[[], bool], background: bool = False) -> bool:
        """RFC 4549 §3: replay queued changes before syncing what they touch. True when
        nothing queued touches it any more (the sync may run), False to serve the
        replica as it is (the queue could not be drained now, or, for a client, not
        within ``write_wait``: the replay goes on in the background)."""
        if not waits():
            return True
        if background:
            await self.outbox.drain()
        else:
            await self.outbox.drain_within(self.write_wait)
        return not waits()

    def _went_offline(self, exc: UpstreamUnavailable) -> None:
        """A link merely busy with another operation is not an upstream gone."""
        if not isinstance(exc, UpstreamBusy):
            self.status.went_offline(str(exc))

    # mailbox list ------------------------------------------------------------

    async def refresh_mailboxes(
        self,
        force: bool = False,
        required: bool = False,
        background: bool = False,
        spare: bool = False,
    ) -> bool:
        """Sync the mailbox list once per runtime (and after changes); offline, keep the
        replica's. Returns whether the list was fetched now. ``spare``: nobody waits for
        it (UpstreamLink.use)."""
        if self._listed and not force:
            return False
        if not await self._replayed_first(self.outbox.folders_pending, background):
            return False

        began = self.reactor.seconds()

        async def run(client: UpstreamClient) -> list[Any] | None:
            self._track(client)
            return await sync_mailbox_list(
                client,
                self.store,
                self.account.id,
                self.outbox.mailboxes_pending(),
                queued_since=self.outbox.folders_pending_in,
            )

        try:
            # LIST, LSUB, STATUS and EXAMINE only: after a quiet spell the LIST follows
            # IDLE's DONE in the same write (the background pass's LIST, coming once a
            # client's session left the link to IDLE, cost the client's next read a
            # round trip more).
            removed = await self.link.use(run, background=background, spare=spare, reads_only=True)
        except UpstreamUnavailable as exc:
            self._went_offline(exc)
            if required:
                raise
            log.info("mailbox list from the replica (upstream unavailable: %s)", exc)
            return False
        if removed is None:
            log.info("mailbox list not applied: a folder change was queued meanwhile")
            return False
        self._listed = True
        self._listed_at = began
        self._watch_changed()
        for mailbox_id in removed:
            self.notifier.publish(self.account.id, MailboxChange(mailbox_id, deleted=True))
        return True

    async def refresh_subscriptions(self) -> None:
        """Learn the subscriptions that have no mailbox (for LSUB and LIST (SUBSCRIBED)):
        LSUB upstream where the folder-list sync (one LIST-EXTENDED) does not tell them.
        Offline, or while a subscription change waits in the queue, the replica's stand,
        and while NOTIFY would have told of a change since the last LSUB."""
        if self.outbox.folders_pending() or self._told_since(self._subscriptions_at):
            return
        began = self.reactor.seconds()

        async def run(client: UpstreamClient) -> None:
            if client.has("LIST-EXTENDED"):
                await sync_subscriptions(client, self.store, self.account.id)

        try:
            await self.link.use(run)
        except UpstreamUnavailable as exc:
            log.info("subscriptions from the replica (%s)", exc)
            return
        self._subscriptions_at = began

    def list_fresh(self) -> bool:
        """Whether the replica's folder list is as current as the upstream's own
        notification delay: NOTIFY has reported changes of the folder list since before
        its last fetch began, and none arrived since. Anything less, and LIST asks."""
        return self._told_since(self._listed_at)

    def _told_since(self, fetched_at: float | None) -> bool:
        """Whether NOTIFY covered the folder list from before fetched_at on, with no news."""
        covered = self.watcher.list_covered_since()
        if covered is None or fetched_at is None or fetched_at < covered:
            return False
        heard = self.watcher.list_heard_at()
        return heard is None or heard < fetched_at

    def _list_changed(self) -> None:
        """NOTIFY told of a mailbox created, renamed or deleted, or a subscription changed
        upstream: fetch the list now, so the next LIST is answered at once and is right."""
        self._refresh_list_in_background()

    def _refresh_list_in_background(self) -> None:
        """Fetch the folder list on the link's background turn. Subscriptions without a
        mailbox are not asked for here: the news made them stale, so a client's LSUB
        asks when it needs them."""
        defer.ensureDeferred(self.refresh_mailboxes(force=True, background=True)).addErrback(
            lambda f: log.warning("folder list refresh after upstream news failed: %s", f.value)
        )

    def orphan_subscriptions(self) -> frozenset[str]:
        """Subscribed names with no mailbox (store/subscriptions.py)."""
        return self.store.read(lambda tx: subscriptions.orphans(tx, self.account.id))

    def _track(self, client: UpstreamClient) -> None:
        """Note the link is up, and hear when this connection goes (for imapproxy status)."""
        self.status.went_online()
        if self._tracked is client:
            return
        self._tracked = client

        def lost(result: object) -> object:
            if self._tracked is client:
                self._tracked = None
                self.status.went_offline("upstream connection lost")
            return result

        client.protocol.closed.addBoth(lost)

    async def find_mailbox(self, name: str) -> Mailbox | None:
        """A mailbox by name; a name the replica does not know is looked for upstream too."""
        await self.refresh_mailboxes()
        found = self.mailbox(name)
        if found is None:
            await self.refresh_mailboxes(force=True)
            found = self.mailbox(name)
        return found

    def mailboxes(self) -> list[Mailbox]:
        return self.store.read(lambda tx: mailboxes.all_mailboxes(tx, self.account.id))

    def mailbox(self, name: str) -> Mailbox | None:
        return self.store.read(lambda tx: mailboxes.find(tx, self.account.id, name))

    # one mailbox ---------------------------------------------------------------

    def fresh(self, mailbox: Mailbox) -> bool:
        """Whether the replica of mailbox is as current as the upstream's own
        notification delay: NOTIFY has covered it since before its last sync began,
        and no news of it arrived since. Anything less, and a client's STATUS or SELECT
        asks the upstream.

        Nor while a body is held after an upstream expunge (store/held.py): its message
        may have moved to this folder, and Dovecot tells of a folder other than the
        one that changed about a second later. A client that saw the message leave
        one folder and opens another at once must find it there; and the background
        pass, which lets the body go, must have looked in every folder itself."""
        covered = self.watcher.covered_since(mailbox.name)
        synced = self._synced_at.get(mailbox.id)
        if covered is None or synced is None or synced < covered:
            return False
        heard = self.watcher.heard_at(mailbox.name)
        if heard is not None and heard >= synced:
            return False
        return not self.store.read(lambda tx: held.any_held(tx, self.account.id))

    async def sync(
        self,
        mailbox: Mailbox,
        required: bool = False,
        background: bool = False,
        fresh_enough: bool = False,
        client: bool = True,
    ) -> Mailbox:
        """Bring mailbox up to date; offline, the replica's state stands (unless required).
        ``fresh_enough``: a replica kept current by NOTIFY (``fresh``) is served as it is,
        without a round trip.

        New messages get their metadata fetched in the background at once (unless this
        is the background's own sync, which fetches it itself, and waits for a quiet
        link). A sync a client waits for (``client``, not ``background``) waits for the
        link at most write_wait."""
        patient = background or not client
        if is_local(mailbox) or (fresh_enough and self.fresh(mailbox)):
            return self.mailbox(mailbox.name) or mailbox
        if fresh_enough and self._cover_coming(mailbox):
            await self.watcher.until_covered()
            current = self.mailbox(mailbox.name) or mailbox
            if self.fresh(current):
                return current
        if not await self._replayed_first(lambda: self.outbox.touches(mailbox.id), patient):
            return self.mailbox(mailbox.name) or mailbox
        # Nothing queued touches it now; what a client changes while we wait for the
        # link is queued, and must not be overwritten by the upstream's older flags.
        clear_at = (self.mailbox(mailbox.name) or mailbox).highestmodseq
        also: list[tuple[Mailbox, MailboxChange]] = []
        looked: list[MailboxId] = []

        async def run(client: UpstreamClient) -> tuple[Mailbox, MailboxChange | None]:
            self._track(client)
            began = self.reactor.seconds()
            current = self.mailbox(mailbox.name) or mailbox
            look = self._first_looks.get(current.id)
            if look is not None:
                # What goes on from a look is current from when the look was asked.
                began = min(began, look.asked_at)
            if fresh_enough and self.fresh(current):
                # Made fresh while this waited for the link: by NOTIFY's cover, or by
                # the sync ahead of it (a first sync going on in the background).
                return current, None
            del also[:], looked[:]  # a run again on a new connection starts afresh
            synced = await sync_one(client, current, began)
            # Noted before the link is released: an operation waiting for it runs at
            # once, and must find this mailbox fresh if it is.
            for done, _ in [*also, synced]:
                self._synced_at[done.id] = self._current_from(done, began)
            return synced

        async def sync_one(
            client: UpstreamClient, current: Mailbox, began: float
        ) -> tuple[Mailbox, MailboxChange]:
            others = self._never_synced_besides(current)
            if others:
                try:
                    done, looks = await sync_new_mailboxes(
                        client, self.store, [current, *others], changed_after=clear_at
                    )
                except UpstreamRefused:
                    done, looks = [], {}  # the mailbox's own sync below says why
                self._first_looks.update(
                    (id_, replace(look, asked_at=began)) for id_, look in looks.items()
                )
                looked.extend(looks)
                also.extend(pair for pair in done if pair[0].id != current.id)
                mine = [pair for pair in done if pair[0].id == current.id]
                if mine:
                    return mine[0]
                current = self.mailbox(mailbox.name) or current
            look = self._first_looks.pop(current.id, None)
            return await sync_messages(
                client, self.store, current, changed_after=clear_at, look=look
            )

        try:
            with METRICS.sync_seconds.time():
                # EXAMINE, FETCH and SEARCH only: nothing upstream changes.
                synced, change = await self.link.use(
                    run, background=patient, reads_only=True, spare=background
                )
        except UpstreamUnavailable as exc:
            self._went_offline(exc)
            if required:
                raise
            return self.mailbox(mailbox.name) or mailbox
        if change is None:
            return synced
        self._continue_first_syncs(id_ for id_ in looked if id_ != synced.id)
        for done, done_change in [*also, (synced, change)]:
            self.notifier.publish(self.account.id, done_change)
            if done_change.added and not background:
                self.background.request_metadata(done.id)
        if change.expunged and not background:
            self.background.request_release()  # a body held for a moved twin (sync/twins.py)
        return synced

    def _cover_coming(self, mailbox: Mailbox) -> bool:
        """Whether NOTIFY's cover, on its way, could make mailbox fresh: the replica
        holds its contents to compare with the cover's STATUS, and the link is up (a
        STATUS offline answers from the replica at once, not after a wait)."""
        return (
            mailbox.contents_known
            and self.link.logged_in
            and "NOTIFY" in self.link.upstream_capabilities
            and self.watcher.cover_coming(mailbox.name)
        )

    def _continue_first_syncs(self, ids: Iterable[MailboxId]) -> None:
        """Go on at once with the first syncs a first look began (FirstLook), on the
        link's next turn. The client that opened one folder of a new account opens the
        others next, INBOX first of all: in a cold session at 50 ms, a 10,000-message
        INBOX's sync began only with its own STATUS, 0.12 s after the look had come and
        behind two other folders' EXAMINEs."""
        wanted = set(ids)
        for mailbox in self.mailboxes():
            if mailbox.id in wanted and mailbox.id in self._first_looks:
                defer.ensureDeferred(self.sync(mailbox, client=False)).addErrback(
                    lambda f: log.warning("first sync after a first look failed: %s", f.value)
                )

    def _current_from(self, mailbox: Mailbox, began: float) -> float:
        """From when the replica of mailbox, just synced by a sync that began at began,
        is known current. A NOTIFY SET that came to cover it while the sync ran stated
        its STATUS then: if the sync's result matches it (and no news came since), the
        replica is current from the cover on, and the next STATUS needs no resync."""
        covered = self.watcher.covered_since(mailbox.name)
        if covered is None or covered <= began:
            return began
        heard = self.watcher.heard_at(mailbox.name)
        if heard is not None and heard >= covered:
            return began
        if self._matches(mailbox, self._cover_statuses.get(mailbox.name)):
            return covered
        return began

    def _never_synced_besides(self, mailbox: Mailbox) -> list[Mailbox]:
        """Mailboxes to take along with a never-synced one's first sync: the others
        never synced, with no change queued for them (so nothing to keep from the
        upstream's older view), not looked at already, up to NEW_FOLDERS_AT_ONCE."""
        if not mailbox.never_synced or mailbox.id in self._first_looks:
            return []
        queued = self.outbox.mailboxes_pending()
        if queued is None:
            return []
        others = [
            m
            for m in self.mailboxes()
            if m.id != mailbox.id
            and m.never_synced
            and m.selectable
            and not is_local(m)
            and m.id not in queued
            and m.id not in self._first_looks
        ]
        # INBOX first, so the limit never leaves it out (sync_new_mailboxes examines it
        # last, whatever the order here).
        others.sort(key=lambda m: m.name != "INBOX")
        return others[:NEW_FOLDERS_AT_ONCE]

    def stats(self, mailbox: Mailbox) -> MailboxStats:
        """Counts over the whole mailbox, recomputed only when it changed: every change
        bumps the mailbox's modseq, so (uidvalidity, modseq) identifies its state."""
        version = (mailbox.uidvalidity, mailbox.highestmodseq)
        cached = self._stats.get(mailbox.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        stats = self.store.read(lambda tx: _compute_stats(tx, mailbox))
        self._stats[mailbox.id] = (version, stats)
        return stats

    async def ensure_content(
        self,
        mailbox: Mailbox,
        wanted: Iterable[Message],
        needs: set[Need],
        fresh: Fetched | None = None,
    ) -> None:
        """Fetch what the cache lacks of needs; kept at once, or held in ``fresh`` for
        the caller to serve first and keep after (sync/content.py)."""
        try:
            fetched = await fetch_missing(self.link, self.store, mailbox, wanted, needs, fresh)
        except UpstreamUnavailable as exc:
            self._went_offline(exc)
            raise
        self.status.fetched(fetched)

    def content_read(self, blobs: Iterable[BlobId]) -> None:
        """A client read these bodies (noted in memory for the least-recently-read order,
        written in batches). What came from the upstream for them is kept later, and the
        cache brought back under its limit then (server/held_content.py, trim_cache)."""
        self.store.note_reads(self.account.id, blobs)
        if self.store.reads.due():
            self.trim_cache()

    def trim_cache(self) -> None:
        """Evict least recently read bodies while over the limit. A failure here must
        not fail the client's command: it is logged, and the next trim tries again."""
        try:
            evicted = self.store.enforce_limit(self.account.id)
        except Exception:
            log.exception("could not trim the cache of account %d", self.account.id)
            return
        if evicted:
            log.info("cache limit: %d bytes of bodies evicted", evicted)

    def close(self) -> None:
        """The account is closing (idle, or the proxy stops): no more background work,
        the status record flushed, no more hooks into the shared notifier (a later login
        builds a new runtime)."""
        self.background.close()
        self.status.close()
        if self._list_refresh is not None and self._list_refresh.active():
            self._list_refresh.cancel()
        defer.ensureDeferred(self.watcher.close()).addErrback(
            lambda f: log.info("closing the upstream watcher: %s", f.value)
        )
        if self.notifier.on_watch_change.get(self.account.id) == self._watch_changed:
            del self.notifier.on_watch_change[self.account.id]

    def watch(self, mailbox: Mailbox | None) -> None:
        """Have the link IDLE upstream on the mailbox a client just selected."""
        self.link.watch(None if mailbox is None else mailbox.name, self.request_sync)

    def _watched_names(self) -> set[str]:
        ids = self.notifier.watched(self.account.id)
        return {m.name for m in self.mailboxes() if m.id in ids}

    def _watch_changed(self) -> None:
        """Sessions came or went: the link IDLEs where a client still is, and the watcher
        hears news of every selected mailbox (NOTIFY, else a STATUS poll), and of every
        mailbox where the upstream offers NOTIFY: the link's capabilities say so, so a
        watcher does not connect only to find out (once the folder list came, with no
        folder selected, it did, and left again)."""
        names = self._watched_names()
        if self.link.watched not in names:
            self.watch(self.mailbox(sorted(names)[0]) if names else None)
        upstream = {m.name for m in self.mailboxes() if m.selectable and not is_local(m)}
        notify = "NOTIFY" in self.link.upstream_capabilities
        self.watcher.watch(names & upstream, upstream if self._listed and notify else set())

    def _local(self, name: str) -> bool:
        mailbox = self.mailbox(name)
        return mailbox is None or is_local(mailbox)

    def _covered(self, names: frozenset[str], statuses: dict[str, dict[str, int]]) -> None:
        """NOTIFY now covers names (and perhaps the folder list): a mailbox already
        replicated is fresh from now on if the upstream's STATUS in the SET's answer
        matches what the replica last saw, and needs one more sync otherwise (a cold
        session's first folders used to be examined twice); the list needs one more
        fetch. Later STATUS, SELECT and LIST then need no round trip."""
        covered_at = self.reactor.seconds()
        self._cover_statuses = dict(statuses)
        # Read the queue once, not once per mailbox (None: unreadable, so all count).
        queued = self.outbox.mailboxes_pending()
        for mailbox in self.mailboxes():
            if mailbox.name not in names or not mailbox.contents_known or self.fresh(mailbox):
                continue
            touched = queued is None or mailbox.id in queued
            if not touched and self._matches(mailbox, statuses.get(mailbox.name)):
                self._synced_at[mailbox.id] = covered_at
            else:
                # Unless a sync under way makes it fresh first: a first sync in
                # batches is part stored when the cover comes, and a second pass
                # after it cost a cold 10,000-message session a round trip and more.
                self.request_sync(mailbox.name, unless_fresh=True)
        if self._list_refresh is None or not self._list_refresh.active():
            # Not at once: the cover comes in the middle of a new session's STATUS of
            # each folder, and a LIST then took the link from them for a round trip (the
            # INBOX's first sync waited behind it); nor while the session reads bodies.
            # Until then LIST asks the upstream, as it did before the cover.
            self._refresh_list_later(covered_at)

    def _refresh_list_later(self, covered_at: float) -> None:
        self._list_refresh = self.reactor.callLater(
            LIST_REFRESH_DELAY, self._refresh_list_if_stale, covered_at
        )

    def _refresh_list_if_stale(self, covered_at: float) -> None:
        if self.watcher.list_covered_since() is None or self.list_fresh():
            return
        now = self.reactor.seconds()
        if self.link.quiet_for() < LIST_REFRESH_DELAY and now - covered_at < LIST_REFRESH_LATEST:
            self._refresh_list_later(covered_at)
            return
        self._refresh_list_in_background()

    def _matches(self, mailbox: Mailbox, status: dict[str, int] | None) -> bool:
        """Whether the upstream's STATUS says nothing changed since the replica's last
        sync: the same UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ (without a modseq a flag
        change would not show, so no match) and the same count. (The caller checked
        that no queued change touches it.)"""
        if status is None or mailbox.upstream_highestmodseq is None:
            return False
        same = (
            status.get("UIDVALIDITY") == mailbox.upstream_uidvalidity
            and status.get("UIDNEXT") == mailbox.upstream_uidnext
            and status.get("HIGHESTMODSEQ") == mailbox.upstream_highestmodseq
        )
        if not same:
            return False
        count = self.store.read(lambda tx: messages.upstream_count(tx, self.account.id, mailbox.id))
        return status.get("MESSAGES") == count

    def request_sync(self, name: str, unless_fresh: bool = False) -> None:
        """Resync a mailbox in the background (upstream news, a client starting IDLE).
        ``unless_fresh``: not if it is fresh by the time the link is free (see fresh)."""
        mailbox = self.mailbox(name)
        if mailbox is not None:
            synced = self.sync(mailbox, client=False, fresh_enough=unless_fresh)
            defer.ensureDeferred(synced).addErrback(
                lambda f: log.warning("resync of a mailbox after upstream news failed: %s", f.value)
            )
