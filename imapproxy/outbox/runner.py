"""The outbox runner: every write is queued durably, then applied upstream in order.

``perform`` commits the entry before the upstream hears of it, then drains the
account's queue in order (earlier entries first, RFC 4549 §3), and for each entry
applies the upstream's answer to the replica in the same transaction that removes
the entry. A refusal removes the entry and reaches the waiting client; an upstream
that cannot be reached leaves the entry queued for the next drain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from imapproxy.notify import MailboxChange, Notifier
from imapproxy.outbox.operations import OPERATIONS, Operation
from imapproxy.store import Store, Tx, outbox
from imapproxy.store.accounts import Account
from imapproxy.store.outbox import Entry
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable
from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self, store: Store, account: Account, link: UpstreamLink, notifier: Notifier
    ) -> None:
        self.store = store
        self.account = account
        self.link = link
        self.notifier = notifier
        self._lock = defer.DeferredLock()
        self._results: dict[int, Any] = {}

    async def perform(
        self,
        operation: Operation,
        origin: object | None = None,
        prepare: Callable[[Tx], None] | None = None,
    ) -> Any:
        """Queue operation, drain the queue through it, return its applied result.

        prepare runs in the transaction that queues the entry (an APPEND stores its
        message there, so entry and data commit together).
        """

        def queue(tx: Tx) -> Entry:
            if prepare is not None:
                prepare(tx)
            return outbox.add(tx, self.account.id, operation.name, operation.args)

        entry = self.store.write(queue)
        await self.drain(origin, stop_at=entry.seq, operation=operation)
        if entry.seq not in self._results:
            raise UpstreamUnavailable("upstream unreachable; the change is queued for replay")
        result = self._results.pop(entry.seq)
        if isinstance(result, UpstreamRefused):
            raise result
        return result

    def pending(self) -> list[Entry]:
        return self.store.read(lambda tx: outbox.pending(tx, self.account.id))

    async def drain(
        self,
        origin: object | None = None,
        stop_at: int | None = None,
        operation: Operation | None = None,
    ) -> None:
        """Replay queued entries in order (up to stop_at, whose operation may be given
        in memory, so an APPEND's message is not read back from the store)."""
        await self._lock.acquire()
        try:
            for entry in self.pending():
                if stop_at is not None and entry.seq > stop_at:
                    break
                own = entry.seq == stop_at
                result = await self._replay(
                    entry, origin if own else None, operation if own else None
                )
                if stop_at is not None and entry.seq == stop_at:
                    self._results[entry.seq] = result
        except UpstreamUnavailable as exc:
            log.info("outbox for account %d paused: %s", self.account.id, exc)
        finally:
            self._lock.release()

    async def _replay(
        self, entry: Entry, origin: object | None, operation: Operation | None
    ) -> Any:
        if operation is None:
            operation = OPERATIONS[entry.op](entry.args)
            loaded = operation
            self.store.read(lambda tx: loaded.load(tx, self.account.id))
        try:
            answer = await self.link.use(operation.send)
        except UpstreamRefused as refused:
            log.warning(
                "upstream refused queued %s (account %d): %s", entry.op, self.account.id, refused
            )
            self.store.write(lambda tx: outbox.remove(tx, entry))
            return refused

        def apply(tx: Any) -> tuple[Any, list[MailboxChange]]:
            outbox.remove(tx, entry)
            return operation.apply(tx, self.account.id, answer, origin)

        result, changes = self.store.write(apply)
        for change in changes:
            self.notifier.publish(self.account.id, change)
        return result
