"""The outbox runner: every write is applied to the replica and queued, then replayed in order.

``perform`` applies the change to the replica and queues its entry in one
transaction, tells the other sessions, and starts a drain. Online, the client waits
up to ``wait_seconds`` for the upstream: a refusal that arrives in time is undone in
the replica (other sessions told) and the client hears the upstream's NO; an answer
that does not come in time leaves the entry queued and the client hears OK, as it
does at once when the upstream is known to be unreachable.

``drain`` replays the account's entries strictly in order (RFC 4549 §3), one at a
time, and stops at the first it cannot complete. A run of consecutive flag entries
of one mailbox on distinct messages goes up as one batch (one ``UID STORE`` per
distinct delta, ``_flag_batch``), each entry marked, linked and removed as if alone;
a batch the upstream refuses is replayed entry by entry. For each entry:
- ``mark_attempted`` is committed before a byte goes upstream; an entry found
  already attempted (another drain lost the answer, the process was killed) is in
  doubt, and its operation verifies before sending again;
- the upstream's answer is linked into the replica in the transaction that removes
  the entry;
- a refusal for good is undone in the replica; if no client heard it, the entry is
  kept as refused (``store.outbox.refused``), refused data goes to the Recovered
  mailbox and a note to INBOX; never dropped;
- a connection lost before or during the command stops the drain; the entry stays
  (in doubt if it was attempted) for the next drain;
- credentials refused by the upstream pause replay until the next successful login
  (``resume``): nothing is dropped;
- any other exception (a bug) moves the entry to the refused list as FAILED, never
  re-sent blindly and never blocking the entries behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet import defer

from imapproxy.metrics import METRICS
from imapproxy.notify import MailboxChange, Notifier
from imapproxy.outbox import replica
from imapproxy.outbox.base import Operation
from imapproxy.outbox.folders import CreateMailbox, DeleteMailbox, RenameMailbox, SetSubscription
from imapproxy.outbox.operations import AppendMessage, CopyMessages, ExpungeMessages, StoreFlags
from imapproxy.store import Store, Tx, outbox
from imapproxy.store.accounts import Account
from imapproxy.store.outbox import FAILED, REFUSED, Entry
from imapproxy.types import MailboxId
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import AuthenticationFailed, UpstreamRefused, UpstreamUnavailable
from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)

#: How long a client's write waits for the upstream before it hears OK (queued).
WAIT_SECONDS = 3.0

OPERATIONS: dict[str, type[Operation]] = {
    op.name: op
    for op in (
        StoreFlags,
        CopyMessages,
        ExpungeMessages,
        AppendMessage,
        CreateMailbox,
        DeleteMailbox,
        RenameMailbox,
        SetSubscription,
    )
}


def decode(entry: Entry) -> Operation:
    return OPERATIONS[entry.op].from_json(entry.args)


class Outbox:
    def __init__(
        self,
        store: Store,
        account: Account,
        link: UpstreamLink,
        notifier: Notifier,
        clock: Any = None,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.store = store
        self.account = account
        self.link = link
        self.notifier = notifier
        self.clock = clock
        self.wait_seconds = wait_seconds
        self._lock = defer.DeferredLock()
        self._waiting: dict[int, defer.Deferred[Exception | None]] = {}
        #: Called after a folder change was refused (the mailbox list needs a resync).
        self.on_folder_refused: Callable[[], None] | None = None

    # the client's side -----------------------------------------------------------------

    async def perform(self, operation: Operation, origin: object | None = None) -> Any:
        """Apply operation to the replica and queue it; return what the client hears.

        Raises the upstream's refusal when it arrives within the wait (the change is
        undone by then); otherwise the change stands, queued or done.
        """

        entry, result = self._queue(operation, origin)
        if entry is None or self.paused() is not None:
            return result
        outcome: defer.Deferred[Exception | None] = defer.Deferred()
        self._waiting[entry.seq] = outcome
        timer = None
        if self.clock is not None:
            timer = self.clock.callLater(self.wait_seconds, _fire, outcome, None)
        defer.ensureDeferred(self.drain()).addErrback(
            lambda f: log.error("outbox drain failed: %s", f.getTraceback())
        )
        try:
            refusal = await outcome
        finally:
            self._waiting.pop(entry.seq, None)
            if timer is not None and timer.active():
                timer.cancel()
        if refusal is not None:
            raise refusal
        return result

    async def perform_all(
        self, operations: Sequence[Operation], origin: object | None = None
    ) -> list[Any]:
        """Several operations as one change (MULTIAPPEND, RFC 3502): applied to the
        replica in one transaction, so all or none of them, and queued in order; like
        ``perform``, waits for the upstream's answers and raises the first refusal that
        arrives within the wait (the refused entry is undone by then)."""

        def queue(tx: Tx) -> tuple[list[Entry], list[Any], list[MailboxChange]]:
            entries, results, changes = [], [], []
            for operation in operations:
                done, result, changed = operation.apply_local(tx, self.account.id, origin)
                results.append(result)
                changes += changed
                if not done.upstream_free(tx, self.account.id):
                    entries.append(outbox.add(tx, self.account.id, done.name, done.to_json()))
            return entries, results, changes

        entries, results, changes = self.store.write(queue)
        self._publish(changes)
        if not entries or self.paused() is not None:
            return results
        outcomes: dict[int, defer.Deferred[Exception | None]] = {}
        for entry in entries:
            outcomes[entry.seq] = self._waiting[entry.seq] = defer.Deferred()
        timer = None
        if self.clock is not None:

            def waited() -> None:
                for outcome in outcomes.values():
                    _fire(outcome, None)

            timer = self.clock.callLater(self.wait_seconds, waited)
        defer.ensureDeferred(self.drain()).addErrback(
            lambda f: log.error("outbox drain failed: %s", f.getTraceback())
        )
        try:
            refusals = [await outcome for outcome in outcomes.values()]
        finally:
            for seq in outcomes:
                self._waiting.pop(seq, None)
            if timer is not None and timer.active():
                timer.cancel()
        refusal = next((r for r in refusals if r is not None), None)
        if refusal is not None:
            raise refusal
        return results

    def perform_later(self, operation: Operation, origin: object | None = None) -> Any:
        """Apply operation to the replica and queue it, without waiting for the upstream
        nor starting a replay: for changes implied by something else (the ``\\Seen`` of a
        FETCH BODY[]), whose caller starts the replay with ``drain_soon`` once its own
        answer, which must not wait behind the change, is out. Durable like ``perform``;
        a later refusal is handled like any queued change that no client waits for."""
        return self._queue(operation, origin)[1]

    async def drain_within(self, seconds: float) -> None:
        """Start a drain and wait for it at most seconds (a client's command must not
        wait on a stalled link); the drain goes on in the background after that."""
        finished: defer.Deferred[Exception | None] = defer.Deferred()
        running = defer.ensureDeferred(self.drain())
        running.addErrback(lambda f: log.error("outbox drain failed: %s", f.getTraceback()))

        def done(result: object) -> None:
            _fire(finished, None)

        running.addBoth(done)
        timer = None
        if self.clock is not None and not finished.called:
            timer = self.clock.callLater(seconds, _fire, finished, None)
        try:
            await finished
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    def drain_soon(self) -> None:
        """Start replaying in the background (failures are logged, never raised)."""
        if self.pending() and self.paused() is None:
            defer.ensureDeferred(self.drain()).addErrback(
                lambda f: log.error("outbox drain failed: %s", f.getTraceback())
            )

    def _queue(self, operation: Operation, origin: object | None) -> tuple[Entry | None, Any]:
        def queue(tx: Tx) -> tuple[Entry | None, Any, list[MailboxChange]]:
            done, result, changes = operation.apply_local(tx, self.account.id, origin)
            if done.upstream_free(tx, self.account.id):
                return None, result, changes
            return outbox.add(tx, self.account.id, done.name, done.to_json()), result, changes

        entry, result, changes = self.store.write(queue)
        self._publish(changes)
        return entry, result

    def pending(self) -> list[Entry]:
        return self.store.read(lambda tx: outbox.pending(tx, self.account.id))

    def touches(self, mailbox: MailboxId) -> bool:
        """Whether a queued entry changes this mailbox (its sync must wait: RFC 4549 §3).
        An entry that cannot be read might: it counts (the drain that runs first marks
        it failed)."""
        return any(op is None or mailbox in op.mailboxes() for op in map(_readable, self.pending()))

    def mailboxes_pending(self) -> frozenset[MailboxId] | None:
        """Replica mailboxes that queued entries name (the list sync must keep them);
        None when an entry cannot be read, so no mailbox may be dropped."""
        return pending_mailboxes(self.pending())

    def folders_pending(self) -> bool:
        return self.store.read(self.folders_pending_in)

    def folders_pending_in(self, tx: Tx) -> bool:
        """Whether a queued entry changes the mailbox list (one that cannot be read might)."""
        entries = outbox.pending(tx, self.account.id)
        return any(op is None or op.folder_change() for op in map(_readable, entries))

    def paused(self) -> dict[str, Any] | None:
        return self.store.read(lambda tx: outbox.paused(tx, self.account.id))

    def pause(self, upstream_text: str) -> None:
        """The upstream refused the stored credentials: replay waits for a new login
        (``resume``). Nothing is dropped; the mark is what ``imapproxy status`` shows."""
        if self.paused() is not None:
            return
        reason = f"the upstream refused the stored credentials: {upstream_text}"
        log.warning("outbox of account %d paused: %s", self.account.id, reason)
        self.store.write(lambda tx: outbox.set_paused(tx, self.account.id, reason))

    def resume(self) -> None:
        """A login succeeded with credentials the upstream accepts: replay may go on."""
        if self.paused() is not None:
            log.info("outbox of account %d resumes after a new login", self.account.id)
            self.store.write(lambda tx: outbox.set_paused(tx, self.account.id, None))

    # replay ---------------------------------------------------------------------------

    async def drain(self) -> bool:
        """Replay queued entries in order until none is left (True) or one cannot be
        completed now (False: upstream unreachable, answer lost, replay paused)."""
        await self._lock.acquire()
        notes: list[str] = []
        finished = False
        single = 0  # entries to replay one at a time before batching again
        try:
            while True:
                entries = self.pending()
                if not entries:
                    finished = True
                    return True
                if self.paused() is not None:
                    return False
                if not single and entries[0].op == StoreFlags.name:
                    batch: list[Entry] = []
                    replayed = await self._replay_batch(entries, batch, notes)
                    if replayed is None:
                        # Refused or failed as a whole: each entry on its own, so the
                        # refusal (or the bug) stays with the entry it belongs to.
                        single = max(len(batch), 1)
                        continue
                    if not replayed:
                        return False
                    continue
                if not await self._replay(entries[0], notes):
                    return False
                single = max(0, single - 1)
        finally:
            if notes:
                self._note(notes)
            if not finished:
                # Stopped: whoever waits hears OK now (the change stays queued).
                for outcome in list(self._waiting.values()):
                    _fire(outcome, None)
            self._lock.release()

    async def _replay(self, entry: Entry, notes: list[str]) -> bool:
        """One entry; False when the drain must stop here."""
        try:
            operation = decode(entry)
        except Exception as exc:
            self._fail(entry, exc, notes)
            return True

        async def send(client: UpstreamClient) -> tuple[Any, Any]:
            plan = self.store.read(lambda tx: operation.plan(tx, self.account.id))
            self.store.write(lambda tx: outbox.mark_attempted(tx, entry))
            return plan, await operation.send(client, plan, entry.in_doubt)

        try:
            with METRICS.replay_seconds.time():
                plan, answer = await self.link.use(send, background=True)
        except AuthenticationFailed as exc:
            self.pause(exc.text)
            return False
        except UpstreamUnavailable as exc:
            log.info("outbox of account %d waits (%s): %s", self.account.id, entry.op, exc)
            return False
        except UpstreamRefused as refused:
            if not operation.is_already_done(refused, entry.in_doubt):
                self._refuse(entry, operation, refused, notes)
                return True
            plan, answer = None, None
        except Exception as exc:
            self._fail(entry, exc, notes)
            return True

        def complete(tx: Tx) -> list[MailboxChange]:
            outbox.remove(tx, entry)
            return operation.link_answer(tx, self.account.id, plan, answer)

        try:
            changes = self.store.write(complete)
        except Exception as exc:
            self._fail(entry, exc, notes)
            return True
        self._publish(changes)
        self._resolve(entry, None)
        return True

    async def _replay_batch(
        self, entries: list[Entry], batch: list[Entry], notes: list[str]
    ) -> bool | None:
        """The run of flag entries at the head of entries as one replay (``_flag_batch``,
        ``StoreFlags.batch``), chosen once the link is up (offline, no change pays for
        reading the queue); ``batch`` is filled with them. Every entry is marked
        attempted before a byte goes up, and removed in the transaction that links the
        answer, as one entry would be. True when done, False when the drain must stop
        (link down: each entry stays, in doubt if marked; flag deltas are safe to send
        again), None when the upstream refused or the proxy failed: the caller replays
        the entries one at a time so each keeps its own outcome."""
        merged: list[StoreFlags] = []

        async def send(client: UpstreamClient) -> tuple[Any, Any]:
            batch[:] = _flag_batch(entries)
            if not batch:
                return None, None  # the head entry cannot be read: it goes on its own
            operation = StoreFlags.batch([cast(StoreFlags, decode(e)) for e in batch])
            merged.append(operation)
            in_doubt = any(e.in_doubt for e in batch)
            plan = self.store.read(lambda tx: operation.plan(tx, self.account.id))

            def mark(tx: Tx) -> None:
                for entry in batch:
                    outbox.mark_attempted(tx, entry)

            self.store.write(mark)
            return plan, await operation.send(client, plan, in_doubt)

        try:
            with METRICS.replay_seconds.time():
                plan, answer = await self.link.use(send, background=True)
        except AuthenticationFailed as exc:
            self.pause(exc.text)
            return False
        except UpstreamUnavailable as exc:
            log.info("outbox of account %d waits (store): %s", self.account.id, exc)
            return False
        except Exception as exc:
            log.info("batched replay of %d flag entries stopped (%s); one at a time",
                     len(batch), exc)  # fmt: skip
            return None
        if not merged:
            return None

        def complete(tx: Tx) -> list[MailboxChange]:
            for entry in batch:
                outbox.remove(tx, entry)
            return merged[0].link_answer(tx, self.account.id, plan, answer)

        try:
            changes = self.store.write(complete)
        except Exception as exc:
            log.info("linking %d batched flag entries failed (%s); one at a time",
                     len(batch), exc)  # fmt: skip
            return None
        self._publish(changes)
        for entry in batch:
            self._resolve(entry, None)
        return True

    def _refuse(
        self, entry: Entry, operation: Operation, refused: UpstreamRefused, notes: list[str]
    ) -> None:
        """The upstream refused for good: bring the replica back in line with it."""
        waiting = self._waiting.get(entry.seq)
        heard = waiting is not None and not waiting.called

        def resolve(tx: Tx) -> list[MailboxChange]:
            changes = operation.undo(tx, self.account.id)
            if heard:
                # The client hears NO and still has what it sent.
                outbox.remove(tx, entry)
                operation.discard(tx, self.account.id)
            else:
                changes += operation.recover(tx, self.account.id)
                outbox.set_refused(tx, entry, REFUSED, refused.text or refused.status)
            return changes

        self._publish(self.store.write(resolve))
        if not heard:
            log.warning(
                "upstream refused queued %s of account %d: %s; kept as refused",
                operation.describe(),
                self.account.id,
                refused.text,
            )
            notes.append(f"{operation.describe()}: {refused.text or refused.status}")
        if operation.folder_change() and self.on_folder_refused is not None:
            self.on_folder_refused()
        self._resolve(entry, refused if heard else None)

    def _fail(self, entry: Entry, error: Exception, notes: list[str]) -> None:
        """A bug while replaying: keep the entry (as FAILED) and go on with the others.
        What the upstream did is unknown, so nothing is undone; the next sync shows it."""
        log.error(
            "queued %s of account %d failed on the proxy; kept as failed, not re-sent",
            entry.op,
            self.account.id,
            exc_info=error,
        )
        reason = f"failed on the proxy: {type(error).__name__}: {error}"
        self.store.write(lambda tx: outbox.set_refused(tx, entry, FAILED, reason))
        notes.append(f"{entry.op} {reason}")
        self._resolve(entry, None)

    def _resolve(self, entry: Entry, outcome: Exception | None) -> None:
        waiting = self._waiting.get(entry.seq)
        if waiting is not None:
            _fire(waiting, outcome)

    def _note(self, notes: list[str]) -> None:
        try:
            change = self.store.write(lambda tx: replica.add_note(tx, self.account.id, notes))
        except Exception:
            log.exception("could not write the note about refused changes")
            return
        if change is not None:
            self._publish([change])

    def _publish(self, changes: list[MailboxChange]) -> None:
        for change in changes:
            self.notifier.publish(self.account.id, change)


#: At most this many flag entries, and messages, go up as one batch (a UID set of
#: that many scattered UIDs stays well under the upstream's command-line limit).
BATCH_ENTRIES = 500
BATCH_MESSAGES = 2000


def _flag_batch(entries: list[Entry]) -> list[Entry]:
    """The run of consecutive flag entries at the head of the queue that can go up
    together: same mailbox and UIDVALIDITY, each naming messages no earlier one of the
    run names (deltas of distinct messages commute; two deltas of one message keep
    their order by going in separate batches)."""
    batch: list[Entry] = []
    first: StoreFlags | None = None
    seen: set[int] = set()
    for entry in entries[:BATCH_ENTRIES]:
        operation = _readable(entry)
        if not isinstance(operation, StoreFlags):
            break
        if first is None:
            first = operation
        elif not first.batches_with(operation):
            break
        uids = operation.local_uids()
        if uids & seen or (batch and len(seen) + len(uids) > BATCH_MESSAGES):
            break
        seen |= uids
        batch.append(entry)
    return batch


def pending_mailboxes(entries: list[Entry]) -> frozenset[MailboxId] | None:
    """The mailboxes entries name; None when one cannot be read (it might name any)."""
    operations = [_readable(e) for e in entries]
    if any(op is None for op in operations):
        return None
    return frozenset(m for op in operations if op is not None for m in op.mailboxes())


def _readable(entry: Entry) -> Operation | None:
    """The entry's operation, or None when it cannot be decoded: callers then assume
    the worst of it (it touches everything), never that it touches nothing."""
    try:
        return decode(entry)
    except Exception:
        return None


def _fire(outcome: defer.Deferred[Exception | None], value: Exception | None) -> None:
    if not outcome.called:
        outcome.callback(value)
