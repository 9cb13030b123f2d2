"""Keeps the whole replica's metadata current while online, without delaying clients.

Offline, a mail client's header sync must work for every folder, not only those a
client happened to open. So while the link is up this keeps, for every folder, the
message list current and, for every message it learns of, FLAGS, INTERNALDATE,
RFC822.SIZE, ENVELOPE and BODYSTRUCTURE (with the list), and the header block (in
batches of many messages per UID FETCH, never one round trip per message; also the
ENVELOPE and BODYSTRUCTURE of a message the list came without, e.g. one expunged
while listed, or an older replica's).

A full pass runs after every (re)connection and every `interval` seconds: the folder
list, then one STATUS per folder (a folder whose UIDVALIDITY, UIDNEXT, MESSAGES and,
with CONDSTORE, HIGHESTMODSEQ did not move is not opened), then the metadata of
new messages. When a client's own sync learns of new messages, only their metadata
is fetched, at once.

The account has one upstream connection, serialized (link.use is a FIFO lock), so
every step here is one short turn on it: a client command that arrives meanwhile
waits behind at most one step. Metadata batches are sized to take about STEP_SECONDS
on the link at hand (a slow link gets small batches). After a complete pass,
the prefetch policy's bodies are fetched (sync/prefetch.py) the same way, in turns of
about STEP_SECONDS, giving way to new mail as soon as a client's sync finds some.

A complete pass has compared every new message's header with the bodies held after an
upstream expunge (store/held.py, sync/twins.py): those held before it began are freed.
Something held asks for a pass at once (``request_release``, or another pass right
after this one), so a held body waits seconds, not an interval.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from imapproxy.store import Tx, held, mailboxes, messages, reclaim
from imapproxy.store.cache import Kind
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.sync.content import Need, fetch_batch, missing
from imapproxy.sync.prefetch import PrefetchPolicy, fetch_bodies, plan
from imapproxy.sync.progress import Progress
from imapproxy.types import MailboxId
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable

if TYPE_CHECKING:
    from imapproxy.account import AccountRuntime

log = logging.getLogger(__name__)

METADATA_NEEDS = frozenset({Need(Kind.ENVELOPE), Need(Kind.BODYSTRUCTURE), Need(Kind.HEADER)})
#: Aim for background turns on the link of about this long.
STEP_SECONDS = 0.5
MIN_BATCH = 10
MAX_BATCH = 500
#: Bytes of bodies per background prefetch turn: sized to STEP_SECONDS, within these.
MIN_BODY_BUDGET = 64 * 2**10
MAX_BODY_BUDGET = 8 * 2**20
DEFAULT_INTERVAL = 300.0


def folder_order(mailbox: Mailbox) -> tuple[int, str]:
    """INBOX first (what users read first when they land), then by name."""
    return (0 if mailbox.name == "INBOX" else 1, mailbox.name)


class BackgroundSync:
    def __init__(
        self,
        runtime: AccountRuntime,
        interval: float = DEFAULT_INTERVAL,
        policy: PrefetchPolicy | None = None,
    ) -> None:
        self.runtime = runtime
        self.reactor = runtime.reactor
        self.interval = interval
        self.policy = policy or PrefetchPolicy()
        self.batch = 100
        self.body_budget = 512 * 2**10
        self._call: Any = None
        self._running = False
        self._full = False
        self._pending: set[MailboxId] = set()
        self._closed = False
        #: per mailbox: (local UIDVALIDITY, highest local UID whose metadata was looked at)
        self._checked: dict[MailboxId, tuple[int, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and not self._closed

    def request_full(self) -> None:
        """A full pass soon (after a reconnection, or when the interval is up)."""
        if self.enabled:
            self._full = True
            self._kick()

    def request_metadata(self, mailbox: MailboxId) -> None:
        """A client's sync learnt of new messages here: fetch their metadata now."""
        if self.enabled:
            self._pending.add(mailbox)
            self._kick()

    def request_release(self) -> None:
        """The upstream expunged messages: if their bodies are held for a twin (store/held.py),
        a full pass soon looks in every folder and then lets go of them."""
        account = self.runtime.account.id
        if self.enabled and self.runtime.store.read(lambda tx: held.any_held(tx, account)):
            self.request_full()

    def close(self) -> None:
        self._closed = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    # ---------------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._running:
            self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self._call is not None and self._call.active():
            if delay >= self._call.getTime() - self.reactor.seconds():
                return
            self._call.cancel()
        self._call = self.reactor.callLater(delay, self._start)

    def _start(self) -> None:
        self._call = None
        defer.ensureDeferred(self._run()).addErrback(
            lambda f: log.error("background sync failed: %s", f.getTraceback())
        )

    async def _run(self) -> None:
        if self._running or self._closed:
            return
        self._running = True
        try:
            while self.enabled and (self._full or self._pending):
                full, self._full = self._full, False
                pending, self._pending = self._pending, set()
                try:
                    if full:
                        await self._full_pass()
                    else:
                        for mailbox_id in sorted(pending):
                            mailbox = self._mailbox(mailbox_id)
                            if mailbox is not None:
                                await self._metadata(mailbox)
                except UpstreamUnavailable as exc:
                    self.runtime.status.went_offline(str(exc))
                    self._pending |= pending
                    break
        finally:
            self._running = False
            if self.enabled:
                self._full = True
                self._schedule(self.interval)
                self._resync_watched()

    def _resync_watched(self) -> None:
        """The link had other folders open meanwhile, so it heard no news (EXISTS, EXPUNGE,
        or VANISHED where QRESYNC is enabled) of the one clients watch, and entering IDLE again does not report what changed
        in between: look once, so nothing that arrived during the pass waits for a poll
        (unless NOTIFY told of it anyway: then the replica is fresh)."""
        watched = self.runtime.link.watched
        if watched is not None:
            self.runtime.request_sync(watched, unless_fresh=True)

    def _mailbox(self, mailbox_id: MailboxId) -> Mailbox | None:
        """Its record as it is now (one key, not the account's whole list: the pass asks
        once a folder)."""
        account = self.runtime.account.id
        return self.runtime.store.read(lambda tx: mailboxes.get(tx, account, mailbox_id))

    async def _full_pass(self) -> None:
        started = self.reactor.seconds()
        began = held.now_ms()
        if not await self.runtime.refresh_mailboxes(
            force=True, required=True, background=True, spare=True
        ):
            return
        boxes = sorted((m for m in self.runtime.mailboxes() if m.selectable), key=folder_order)
        for mailbox in boxes:
            if self._closed:
                return
            await self._message_list(mailbox)
        fetched = 0
        for mailbox in boxes:
            current = self._mailbox(mailbox.id)
            if current is not None and not self._closed:
                fetched += await self._metadata(current)
        if self._closed:
            return
        account = self.runtime.account.id
        self.runtime.store.write(lambda tx: reclaim.release_held(tx, account, began))
        if self.runtime.store.read(lambda tx: held.any_held(tx, account)):
            self._full = True  # held during this pass: the next one looks, then frees them
        self.runtime.status.synced()
        log.info(
            "background sync complete: %d folders, %d bytes of metadata in %.1f s",
            len(boxes),
            fetched,
            self.reactor.seconds() - started,
        )
        await self._prefetch()

    async def _prefetch(self) -> None:
        """Bodies the prefetch policy wants readable offline, a small turn at a time,
        in the room the cache limit leaves (after trimming the cache to it)."""
        self.runtime.trim_cache()
        work = plan(self.runtime.store, self.runtime.account.id, self.policy)
        if not work.work:
            return
        started = self.reactor.seconds()
        got = [0, 0]

        def done(count: int, size: int, elapsed: float) -> None:
            got[0] += count
            got[1] += size
            self.runtime.status.fetched(size)
            if elapsed > 0 and size:
                target = size * STEP_SECONDS / elapsed
                self.body_budget = int(
                    min(MAX_BODY_BUDGET, max(MIN_BODY_BUDGET, self.body_budget / 2, target))
                )

        for mailbox, wanted in work.work:
            room = True
            try:
                room = await fetch_bodies(
                    self.runtime.link,
                    self.runtime.store,
                    mailbox,
                    wanted,
                    lambda: self.body_budget,
                    done,
                    self.reactor.seconds,
                    stop=lambda: self._closed or bool(self._pending),
                )
            except UpstreamRefused as exc:
                log.info("prefetch in %r refused: %s", mailbox.name, exc.text)
            if not room:
                log.info("prefetch stopped: the cache limit leaves no room")
                break
            if self._closed or self._pending:
                # A client's new mail comes first; the next pass goes on from here.
                self._full = not self._closed
                break
        log.info(
            "prefetch: %d message(s), %d bytes in %.1f s",
            got[0],
            got[1],
            self.reactor.seconds() - started,
        )

    async def _message_list(self, mailbox: Mailbox) -> None:
        """Resync one folder's message list, unless NOTIFY keeps it current or STATUS
        says nothing moved. (The pass listed the folders before its earlier turns; a
        first session's look may have synced this one since.)"""
        current = self._mailbox(mailbox.id)
        if current is None or self.runtime.fresh(current):
            return
        mailbox = current

        async def status(client: UpstreamClient) -> dict[str, int]:
            items: tuple[str, ...] = ("MESSAGES", "UIDNEXT", "UIDVALIDITY")
            if client.has("CONDSTORE"):
                items += ("HIGHESTMODSEQ",)
            return await client.status(mailbox.name, items)

        try:
            now = await self.runtime.link.use(status, spare=True)
        except UpstreamRefused as exc:
            log.info("background STATUS of %r refused: %s", mailbox.name, exc.text)
            return
        count = self.runtime.store.read(
            lambda tx: messages.upstream_count(tx, mailbox.account, mailbox.id)
        )
        unchanged = (
            mailbox.contents_known
            and now.get("UIDVALIDITY") == mailbox.upstream_uidvalidity
            and now.get("UIDNEXT") == mailbox.upstream_uidnext
            and now.get("MESSAGES") == count
            and now.get("HIGHESTMODSEQ", mailbox.upstream_highestmodseq)
            == mailbox.upstream_highestmodseq
        )
        if unchanged:
            return
        try:
            await self.runtime.sync(mailbox, required=True, background=True)
        except UpstreamRefused as exc:
            log.info("background sync of %r refused: %s", mailbox.name, exc.text)

    async def _metadata(self, mailbox: Mailbox) -> int:
        """Fetch ENVELOPE, BODYSTRUCTURE and header of the messages that lack them."""
        validity, checked = self._checked.get(mailbox.id, (mailbox.uidvalidity, 0))
        if validity != mailbox.uidvalidity:
            checked = 0

        def newer(tx: Tx) -> list[Message]:
            uids = [u for u in messages.uids(tx, mailbox.account, mailbox.id) if u > checked]
            return messages.get_many(tx, mailbox.account, mailbox.id, uids)

        wanted = self.runtime.store.read(newer)
        if not wanted:
            return 0
        fetched = 0
        groups = missing(self.runtime.store, mailbox, wanted, set(METADATA_NEEDS))
        progress = Progress(
            f"metadata of {mailbox.name!r}", sum(len(group) for group in groups.values())
        )
        for needs, group in groups.items():
            start = 0
            while start < len(group) and not self._closed:
                batch = group[start : start + self.batch]
                began = self.reactor.seconds()
                try:
                    got = await fetch_batch(
                        self.runtime.link,
                        self.runtime.store,
                        mailbox,
                        batch,
                        needs,
                        background=True,
                    )
                except UpstreamRefused as exc:
                    log.info("background metadata of %r refused: %s", mailbox.name, exc.text)
                    return fetched
                self.runtime.status.fetched(got)
                fetched += got
                start += len(batch)
                progress.advance(len(batch))
                self._adapt(len(batch), self.reactor.seconds() - began)
        progress.finish()
        self._checked[mailbox.id] = (mailbox.uidvalidity, max(m.uid for m in wanted))
        if groups:
            count = sum(len(group) for group in groups.values())
            log.info("metadata of %d message(s) in %r fetched", count, mailbox.name)
        return fetched

    def _adapt(self, size: int, elapsed: float) -> None:
        """Next batch sized to take about STEP_SECONDS, changing by at most 2x a step."""
        if size < self.batch:
            return
        target = size * STEP_SECONDS / max(elapsed, 0.01)
        self.batch = int(
            min(MAX_BATCH, max(MIN_BATCH, self.batch / 2, min(target, self.batch * 2)))
        )
