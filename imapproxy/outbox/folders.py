"""Mailbox operations: CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE (life cycle in base.py).

Each is idempotent upstream or recognizes "already so" (ALREADYEXISTS for CREATE,
NONEXISTENT for DELETE), which is how an in-doubt attempt is completed without harm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Self

from imapproxy.notify import MailboxChange
from imapproxy.outbox import replica
from imapproxy.outbox.base import Operation
from imapproxy.store import Tx, mailboxes, subscriptions
from imapproxy.types import AccountId, MailboxId
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import UpstreamRefused

log = logging.getLogger(__name__)


def _delimiter(tx: Tx, account: AccountId) -> str | None:
    inbox = mailboxes.find(tx, account, "INBOX")
    return inbox.delimiter if inbox is not None else "/"


@dataclass(frozen=True)
class CreateMailbox(Operation):
    mailbox_name: str
    mailbox: int = 0
    #: RFC 6154 CREATE-SPECIAL-USE: ``(USE (\\Archive))``, passed on to the upstream.
    special_use: tuple[str, ...] = ()

    name = "create"
    already_done = frozenset({"ALREADYEXISTS"})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "special_use": tuple(data.get("special_use", ()))})

    def folder_change(self) -> bool:
        return True

    def mailboxes(self) -> set[MailboxId]:
        return {MailboxId(self.mailbox)}

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        found = mailboxes.find(tx, account, self.mailbox_name)
        if found is None:
            # Known to be empty (created here), so STATUS/SELECT answer it offline.
            found = mailboxes.create(
                tx,
                account,
                self.mailbox_name,
                delimiter=_delimiter(tx, account),
                attributes=self.special_use,
                extra={"created_here": True},
            )
        return replace(self, mailbox=int(found.id)), None, []

    async def send(self, client: UpstreamClient, plan: Any, in_doubt: bool) -> None:
        await client.create(self.mailbox_name, self.special_use)

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        mailbox = mailboxes.get(tx, account, MailboxId(self.mailbox))
        if mailbox is None or replica.is_local(mailbox):
            return []
        mailboxes.delete(tx, mailbox)
        return [MailboxChange(mailbox.id, deleted=True)]

    def describe(self) -> str:
        return f"creation of folder {self.mailbox_name}"


@dataclass(frozen=True)
class DeleteMailbox(Operation):
    mailbox_name: str
    mailbox: int = 0

    name = "delete"
    already_done = frozenset({"NONEXISTENT"})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    def folder_change(self) -> bool:
        return True

    def upstream_free(self, tx: Tx, account: AccountId) -> bool:
        mailbox = mailboxes.get(tx, account, MailboxId(self.mailbox))
        return mailbox is not None and replica.is_local(mailbox)

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        mailbox = mailboxes.find(tx, account, self.mailbox_name)
        if mailbox is None:
            return self, None, []
        if mailbox.subscribed:
            # The subscription outlives the mailbox (RFC 3501 §6.3.6), as upstream.
            subscriptions.note(tx, account, mailbox.name, True)
        mailboxes.delete(tx, mailbox)
        return (
            replace(self, mailbox=int(mailbox.id)),
            None,
            [MailboxChange(mailbox.id, deleted=True)],
        )

    async def send(self, client: UpstreamClient, plan: Any, in_doubt: bool) -> None:
        await client.delete(self.mailbox_name)

    # undo: the replica lost the mailbox's records; the runner resyncs the mailbox list
    # after every refusal of a folder change, which brings it back from the upstream.

    def describe(self) -> str:
        return f"deletion of folder {self.mailbox_name}"


def _rename_local(tx: Tx, account: AccountId, old: str, new: str) -> None:
    for mailbox in mailboxes.all_mailboxes(tx, account):
        delimiter = mailbox.delimiter or ""
        if mailbox.name == old:
            mailboxes.put(tx, mailbox.with_(name=new))
        elif delimiter and mailbox.name.startswith(old + delimiter):
            mailboxes.put(tx, mailbox.with_(name=new + mailbox.name[len(old) :]))


@dataclass(frozen=True)
class RenameMailbox(Operation):
    """Renames in place (children too), so the replica keeps its messages and UIDs."""

    old: str
    new: str

    name = "rename"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    def folder_change(self) -> bool:
        return True

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        if self.old.upper() != "INBOX":
            # (Renaming INBOX moves its messages: the list sync after replay shows it.)
            _rename_local(tx, account, self.old, self.new)
        return self, None, []

    async def send(self, client: UpstreamClient, plan: Any, in_doubt: bool) -> None:
        await client.rename(self.old, self.new)

    def is_already_done(self, refused: UpstreamRefused, in_doubt: bool) -> bool:
        # Only an earlier attempt of ours explains "old is gone" or "new exists".
        code = refused.code.name if refused.code is not None else ""
        return in_doubt and code in ("NONEXISTENT", "ALREADYEXISTS")

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        if self.old.upper() != "INBOX" and mailboxes.find(tx, account, self.old) is None:
            _rename_local(tx, account, self.new, self.old)
        return []

    def describe(self) -> str:
        return f"renaming of folder {self.old} to {self.new}"


@dataclass(frozen=True)
class SetSubscription(Operation):
    mailbox_name: str
    subscribed: bool
    was: bool = False

    name = "subscribe"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    def folder_change(self) -> bool:
        return True

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        mailbox = mailboxes.find(tx, account, self.mailbox_name)
        if mailbox is None:
            orphan = self.mailbox_name in subscriptions.orphans(tx, account)
            if orphan and not self.subscribed:
                # Unsubscribing a name whose mailbox is gone: LSUB stops listing it.
                subscriptions.note(tx, account, self.mailbox_name, False)
            return replace(self, was=orphan), None, []
        mailboxes.put(tx, mailbox.with_(subscribed=self.subscribed))
        return replace(self, was=mailbox.subscribed), None, []

    async def send(self, client: UpstreamClient, plan: Any, in_doubt: bool) -> None:
        await client.subscribe(self.mailbox_name, self.subscribed)

    def is_already_done(self, refused: UpstreamRefused, in_doubt: bool) -> bool:
        # Unsubscribing what is not subscribed: already so.
        return (
            not self.subscribed and refused.code is not None and refused.code.name == "NONEXISTENT"
        )

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        mailbox = mailboxes.find(tx, account, self.mailbox_name)
        if mailbox is not None:
            mailboxes.put(tx, mailbox.with_(subscribed=self.was))
        elif self.was:
            subscriptions.note(tx, account, self.mailbox_name, True)
        return []

    def describe(self) -> str:
        verb = "subscription to" if self.subscribed else "unsubscription from"
        return f"{verb} {self.mailbox_name}"
