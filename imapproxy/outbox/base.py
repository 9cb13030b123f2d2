"""What every outbox operation does, in the order the runner calls it.

1. ``apply_local(tx, account, origin)`` — replica first: make the change in the
   replica, in the transaction that queues the entry. Returns the operation completed
   with what applying learned (local UIDs of new messages, what it removed), the
   result the client hears (COPYUID/APPENDUID in our UID space), and what changed.
2. ``plan(tx, account)`` — at replay, read from the replica what sending needs: the
   upstream UIDs of the messages named (substituting, for messages created locally,
   the upstream UID learned since; a local UID is never sent), an APPEND's message.
3. ``send(client, plan, in_doubt)`` — talk to the upstream. ``in_doubt``: an earlier
   attempt may have been executed, so verify first where repeating would duplicate.
4. ``link_answer(tx, account, plan, answer)`` — key the replica's local messages to
   the upstream UIDs the answer names (COPYUID/APPENDUID, or found by identity).
5. On a refusal for good: ``undo`` brings the replica back in line with the upstream;
   if no client heard the refusal, ``recover`` puts refused data where the user sees
   it. ``discard`` frees data nobody needs any more (a client heard NO and has it).

Operations are frozen dataclasses: a typed record whose ``to_json``/``from_json`` is
the stable form stored in the outbox.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

from imapproxy.notify import MailboxChange
from imapproxy.store import Tx
from imapproxy.types import AccountId, MailboxId
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import UpstreamRefused


class Operation:
    name: ClassVar[str]
    #: Refusal codes that mean "what you asked is already so" for this operation.
    already_done: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = _json(value)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        raise NotImplementedError

    def mailboxes(self) -> set[MailboxId]:
        """Replica mailboxes whose state this entry changes (their sync waits for it)."""
        return set()

    def upstream_free(self, tx: Tx, account: AccountId) -> bool:
        """True when the change concerns local-only mailboxes (Recovered): applied to the
        replica, never queued."""
        return False

    def folder_change(self) -> bool:
        """Whether the entry changes the mailbox list (the list sync waits for it)."""
        return False

    def apply_local(
        self, tx: Tx, account: AccountId, origin: object | None
    ) -> tuple[Self, Any, list[MailboxChange]]:
        raise NotImplementedError

    def plan(self, tx: Tx, account: AccountId) -> Any:
        return None

    async def send(self, client: UpstreamClient, plan: Any, in_doubt: bool) -> Any:
        raise NotImplementedError

    def link_answer(
        self, tx: Tx, account: AccountId, plan: Any, answer: Any
    ) -> list[MailboxChange]:
        return []

    def is_already_done(self, refused: UpstreamRefused, in_doubt: bool) -> bool:
        return refused.code is not None and refused.code.name in self.already_done

    def undo(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        return []

    def recover(self, tx: Tx, account: AccountId) -> list[MailboxChange]:
        return []

    def discard(self, tx: Tx, account: AccountId) -> None:
        pass

    def describe(self) -> str:
        return self.name


def _json(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value
