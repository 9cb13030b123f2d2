"""How sessions on one account hear of each other's changes and the upstream's.

Whoever writes to the store (a session's command, the sync engine) publishes what
changed; every session with that mailbox selected queues the news and tells its
client at the next moment RFC 3501/9051 allow (or at once, during IDLE).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from imapproxy.types import UID, AccountId, MailboxId


@dataclass(frozen=True)
class MailboxChange:
    mailbox: MailboxId
    added: bool = False
    expunged: tuple[UID, ...] = ()
    flags: tuple[UID, ...] = ()
    origin: object | None = None
    deleted: bool = False

    def __bool__(self) -> bool:
        return self.added or bool(self.expunged) or bool(self.flags) or self.deleted


Listener = Callable[[MailboxChange], None]


@dataclass
class Notifier:
    _listeners: dict[tuple[AccountId, MailboxId], set[Listener]] = field(
        default_factory=lambda: defaultdict(set)
    )
    #: Per account: told when the set of watched mailboxes changed (sessions came or went).
    on_watch_change: dict[AccountId, Callable[[], None]] = field(default_factory=dict)

    def subscribe(self, account: AccountId, mailbox: MailboxId, listener: Listener) -> None:
        self._listeners[(account, mailbox)].add(listener)
        self._watch_changed(account)

    def unsubscribe(self, account: AccountId, mailbox: MailboxId, listener: Listener) -> None:
        listeners = self._listeners.get((account, mailbox))
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[(account, mailbox)]
                self._watch_changed(account)

    def publish(self, account: AccountId, change: MailboxChange) -> None:
        if not change:
            return
        for listener in list(self._listeners.get((account, change.mailbox), ())):
            listener(change)

    def _watch_changed(self, account: AccountId) -> None:
        callback = self.on_watch_change.get(account)
        if callback is not None:
            callback()

    def watched(self, account: AccountId) -> set[MailboxId]:
        return {mailbox for (acct, mailbox) in self._listeners if acct == account}
