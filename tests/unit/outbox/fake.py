"""A small in-memory upstream for outbox tests: mailboxes of messages with UIDs, and a
link whose next uses can be scripted to fail before sending, lose the answer, or wait."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from imapproxy.message import header_value
from imapproxy.protocol import Atom, SequenceSet
from imapproxy.upstream.client import StoreOutcome
from imapproxy.upstream.errors import UpstreamRefused, UpstreamUnavailable, UpstreamUnreachable


@dataclass
class UpMessage:
    raw: bytes
    date: str
    flags: set[str] = field(default_factory=set)
    modseq: int = 1


@dataclass
class UpMailbox:
    validity: int
    uidnext: int = 1
    messages: dict[int, UpMessage] = field(default_factory=dict)
    highestmodseq: int = 1

    def add(self, message: UpMessage) -> int:
        uid = self.uidnext
        self.messages[uid] = message
        self.uidnext += 1
        self.touch(message)
        return uid

    def touch(self, message: UpMessage) -> int:
        """A change to message: it gets the mailbox's next modseq (RFC 7162)."""
        self.highestmodseq += 1
        message.modseq = self.highestmodseq
        return message.modseq

    def change_flags(self, uid: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Another device changes a message's flags."""
        message = self.messages[uid]
        message.flags = (message.flags | set(add)) - set(remove)
        self.touch(message)


class FakeUpstream:
    """Enough of UpstreamClient for the operations; records every command it executes."""

    def __init__(self) -> None:
        self.boxes: dict[str, UpMailbox] = {}
        self.subscribed: set[str] = set()
        #: RFC 6154 uses given to CREATE, by mailbox name.
        self.special_use: dict[str, tuple[str, ...]] = {}
        self.selected: str | None = None
        self.selected_readonly = True
        self.selected_validity: int | None = None
        self.selected_highestmodseq: int | None = None
        self.commands: list[str] = []
        self.capabilities = {"UIDPLUS", "MOVE"}
        #: command name -> refusal to raise when it runs
        self.refuse: dict[str, UpstreamRefused] = {}

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def _check(self, name: str) -> None:
        self.commands.append(name)
        if name in self.refuse:
            raise self.refuse[name]

    def box(self) -> UpMailbox:
        assert self.selected is not None
        return self.boxes[self.selected]

    async def select(self, name: str, readonly: bool = True) -> None:
        self._check("SELECT")
        if name not in self.boxes:
            raise UpstreamRefused("NO", None, "Mailbox doesn't exist")
        self.selected, self.selected_readonly = name, readonly
        self.selected_validity = self.boxes[name].validity
        if "CONDSTORE" in self.capabilities:
            self.selected_highestmodseq = self.boxes[name].highestmodseq

    async def ensure_selected(self, name: str, writable: bool = False) -> None:
        if self.selected != name or (writable and self.selected_readonly):
            await self.select(name, readonly=not writable)

    async def fetch(self, uids: SequenceSet, attributes: Any, **_: Any) -> list[dict[str, Any]]:
        self._check("FETCH")
        box = self.box()
        largest = max(box.messages, default=0)
        wanted = set(uids.resolve(largest))
        out = []
        for uid in sorted(wanted & set(box.messages)):
            m = box.messages[uid]
            message_id = header_value(m.raw, b"Message-ID") or b""
            out.append(
                {
                    "UID": uid,
                    "FLAGS": tuple(Atom(f) for f in sorted(m.flags)),
                    "INTERNALDATE": m.date.encode(),
                    "RFC822.SIZE": len(m.raw),
                    "BODY[HEADER.FIELDS (MESSAGE-ID)]": b"Message-ID: " + message_id + b"\r\n\r\n",
                    "MODSEQ": (m.modseq,),
                }
            )
        return out

    async def search_uids(self, uids: SequenceSet) -> set[int]:
        self._check("SEARCH")
        return set(uids.resolve(0)) & set(self.box().messages)

    async def store(
        self,
        uids: SequenceSet,
        mode: str,
        flags: tuple[str, ...],
        unchangedsince: int | None = None,
    ) -> StoreOutcome:
        if unchangedsince is not None:
            assert "CONDSTORE" in self.capabilities
            self._check(f"STORE {mode} UNCHANGEDSINCE {unchangedsince}")
        else:
            self._check(f"STORE {mode}")
        modified, modseqs = set(), {}
        box = self.box()
        for uid in uids.resolve(0):
            message = box.messages.get(uid)
            if message is None:
                continue
            if unchangedsince is not None and message.modseq > unchangedsince:
                modified.add(uid)
                continue
            before = set(message.flags)
            if mode == "+":
                message.flags |= set(flags)
            else:
                message.flags -= set(flags)
            if message.flags != before:
                box.touch(message)
            if "CONDSTORE" in self.capabilities:
                modseqs[uid] = message.modseq
        return StoreOutcome(frozenset(modified), modseqs)

    async def copy(
        self, uids: SequenceSet, target: str, move: bool = False
    ) -> tuple[int, list[int], list[int]]:
        self._check("MOVE" if move else "COPY")
        if target not in self.boxes:
            raise UpstreamRefused("NO", None, "[TRYCREATE] no such mailbox")
        box, dest = self.box(), self.boxes[target]
        sources, dests = [], []
        for uid in uids.resolve(0):
            message = box.messages.get(uid)
            if message is None:
                continue
            copy = UpMessage(message.raw, message.date, set(message.flags))
            sources.append(uid)
            dests.append(dest.add(copy))
            if move:
                del box.messages[uid]
        return dest.validity, sources, dests

    async def expunge(self, uids: SequenceSet) -> None:
        self._check("EXPUNGE")
        box = self.box()
        for uid in uids.resolve(0):
            message = box.messages.get(uid)
            if message is not None and "\\Deleted" in message.flags:
                del box.messages[uid]

    async def append(
        self, mailbox: str, flags: tuple[str, ...], date: Any, message: bytes
    ) -> tuple[int, int]:
        self._check("APPEND")
        if mailbox not in self.boxes:
            raise UpstreamRefused("NO", None, "[TRYCREATE] no such mailbox")
        from imapproxy.protocol import format_datetime

        box = self.boxes[mailbox]
        uid = box.add(UpMessage(bytes(message), format_datetime(date), set(flags)))
        return box.validity, uid

    async def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        self._check("CREATE")
        self.boxes.setdefault(name, UpMailbox(validity=len(self.boxes) + 100))
        if special_use:
            self.special_use[name] = special_use

    async def delete(self, name: str) -> None:
        self._check("DELETE")
        self.boxes.pop(name, None)

    async def rename(self, old: str, new: str) -> None:
        self._check("RENAME")
        self.boxes[new] = self.boxes.pop(old)

    async def subscribe(self, name: str, subscribed: bool) -> None:
        self._check("SUBSCRIBE" if subscribed else "UNSUBSCRIBE")
        if subscribed:
            self.subscribed.add(name)
        else:
            self.subscribed.discard(name)


LOST = "lost"  # the command reaches the upstream, its answer does not come back


class ScriptedLink:
    """UpstreamLink.use with scripted outcomes, one per use (then plain success).

    An UpstreamUnreachable (or AuthenticationFailed) is raised before the operation
    runs (nothing sent); LOST runs it, then raises UpstreamUnavailable; a Deferred is
    awaited first.
    """

    def __init__(self, upstream: FakeUpstream, *outcomes: Any) -> None:
        self.upstream = upstream
        self.outcomes = list(outcomes)
        self.uses = 0

    async def use(
        self,
        operation: Callable[[Any], Awaitable[Any]],
        *,
        background: bool = False,
        reads_only: bool = False,
        spare: bool = False,
    ) -> Any:
        self.uses += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, defer.Deferred):
            await outcome
            outcome = None
        if isinstance(outcome, (UpstreamUnreachable, UpstreamRefused)):
            raise outcome
        result = await operation(self.upstream)
        if outcome == LOST:
            raise UpstreamUnavailable("connection lost before the answer")
        return result
