"""The outbox runner: every write is queued durably, then applied upstream in order.

``perform`` commits the entry before the upstream hears of it, then drains the
account's queue in order (earlier entries first, RFC 4549 §3). For each entry the
upstream's answer is applied to the replica in the same transaction that removes
the entry, and the client waiting for it (if any) gets the result, whichever drain
replayed it.

When the upstream cannot be reached, what the client hears depends on whether its
command went out:
- never sent (no connection): the entry is removed and the client hears
  ``NO [UNAVAILABLE]`` — nothing happened, nothing will;
- sent, but the connection broke before the answer (in doubt): the entry stays,
  marked ``in_doubt``, and is completed on the next drain, checked first where a
  blind repeat could duplicate (RFC 4549 §5.1); the client hears that.
A refusal removes the entry; its data is kept when no client heard the refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from imapproxy.notify import MailboxChange, Notifier
from imapproxy.outbox.operations import OPERATIONS, Operation
from imapproxy.store import Store, Tx, outbox
from imapproxy.store.accounts import Account
from imapproxy.store.outbox import Entry
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable, UpstreamUnreachable
from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)

#: A refusal that means "already done" when the entry may have been applied before.
ALREADY_DONE_CODES = {"ALREADYEXISTS", "NONEXISTENT"}


class InDoubt(UpstreamUnavailable):
    """The command was sent but its answer never came; it stays queued and is completed
    (verified first) when the upstream is back."""


@dataclass
class _Waiting:
    operation: Operation
    origin: object | None
    result: defer.Deferred[Any]


class Outbox:
    def __init__(
        self, store: Store, account: Account, link: UpstreamLink, notifier: Notifier
    ) -> None:
        self.store = store
        self.account = account
        self.link = link
        self.notifier = notifier
        self._lock = defer.DeferredLock()
        self._waiting: dict[int, _Waiting] = {}

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
        waiting = _Waiting(operation, origin, defer.Deferred())
        self._waiting[entry.seq] = waiting
        try:
            stopped = await self.drain()
        finally:
            self._waiting.pop(entry.seq, None)
        if waiting.result.called:
            return await waiting.result
        # Our entry is still queued: the upstream could not be reached or did not answer.
        if stopped is not None and stopped[0] == entry.seq and stopped[1]:
            self._mark_in_doubt(entry)
            raise InDoubt(
                "the upstream connection broke before it answered; the change is kept and "
                "will be completed when the upstream is back"
            )
        self._discard(entry, operation)
        raise UpstreamUnavailable("upstream unreachable; the change was not applied")

    def pending(self) -> list[Entry]:
        return self.store.read(lambda tx: outbox.pending(tx, self.account.id))

    async def drain(self) -> tuple[int, bool] | None:
        """Replay queued entries in order until the queue is empty or the upstream is
        gone. Returns None when done, else (seq of the entry it stopped at, whether that
        entry was sent)."""
        await self._lock.acquire()
        try:
            for entry in self.pending():
                try:
                    result = await self._replay(entry)
                except UpstreamUnreachable as exc:
                    log.info("outbox of account %d waits: %s", self.account.id, exc)
                    return entry.seq, False
                except UpstreamUnavailable as exc:
                    log.info(
                        "outbox of account %d: %s in doubt: %s", self.account.id, entry.op, exc
                    )
                    return entry.seq, True
                waiting = self._waiting.get(entry.seq)
                if waiting is not None and not waiting.result.called:
                    if isinstance(result, Exception):
                        waiting.result.errback(result)
                    else:
                        waiting.result.callback(result)
            return None
        finally:
            self._lock.release()

    async def _replay(self, entry: Entry) -> Any:
        """Send one entry and apply its answer; a refusal comes back as the exception."""
        waiting = self._waiting.get(entry.seq)
        if waiting is not None:
            operation, origin = waiting.operation, waiting.origin
        else:
            operation, origin = OPERATIONS[entry.op](entry.args), None
            loaded = operation
            self.store.read(lambda tx: loaded.load(tx, self.account.id))
        try:
            answer = await self.link.use(operation.send)
        except UpstreamRefused as refused:
            in_doubt = bool(entry.args.get("in_doubt"))
            if not (
                in_doubt and refused.code is not None and refused.code.name in ALREADY_DONE_CODES
            ):
                self._refused(entry, operation, refused, heard=waiting is not None)
                return refused
            answer = None  # it was applied by the attempt whose answer we never got
        except UpstreamUnavailable:
            raise
        except Exception as exc:  # a bug must not block the account's queue forever
            log.exception("queued %s failed on the proxy; removed from the queue", entry.op)
            self._refused(entry, operation, exc, heard=waiting is not None)
            return UpstreamRefused("NO", None, f"{entry.op} failed on the proxy")

        def apply(tx: Tx) -> tuple[Any, list[MailboxChange]]:
            outbox.remove(tx, entry)
            return operation.apply(tx, self.account.id, answer, origin)

        result, changes = self.store.write(apply)
        for change in changes:
            self.notifier.publish(self.account.id, change)
        return result

    def _refused(self, entry: Entry, operation: Operation, error: Exception, heard: bool) -> None:
        if heard:
            # The client hears the refusal and still has its data.
            self._discard(entry, operation)
            return
        log.warning(
            "upstream refused queued %s of account %d: %s; its data is kept in the replica",
            entry.op,
            self.account.id,
            error,
        )
        self.store.write(lambda tx: outbox.remove(tx, entry))

    def _discard(self, entry: Entry, operation: Operation) -> None:
        def remove(tx: Tx) -> None:
            outbox.remove(tx, entry)
            operation.discard(tx, self.account.id)

        self.store.write(remove)

    def _mark_in_doubt(self, entry: Entry) -> None:
        args = dict(entry.args, in_doubt=True)
        self.store.write(lambda tx: outbox.update(tx, entry, args))
