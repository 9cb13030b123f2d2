"""The upstream as a semantic interface: list, select, fetch, append, store, copy, move…

Callers speak in mailboxes, UID sets and flags; this module turns that into IMAP
commands through the sans-IO serializer and the answers back into plain values.
Everything the upstream refuses arrives as UpstreamRefused with its code and text.
"""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from imapproxy.protocol import (
    RAW_FETCH_ITEMS,
    Atom,
    Capability,
    ContinuationRequest,
    Copy,
    Create,
    Delete,
    Expunge,
    Fetch,
    FetchAttribute,
    List,
    Login,
    Logout,
    Move,
    QResync,
    Rename,
    ResponseCode,
    ResponseReader,
    Search,
    SearchKey,
    Select,
    SequenceSet,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
    UntaggedData,
    Value,
    fetch_items,
    format_append_start,
    format_command,
    parse_sequence_set,
)
from imapproxy.sasl import MECHANISMS, BearerLogin
from imapproxy.upstream import sasl_login
from imapproxy.upstream.address import Security, UpstreamAddress
from imapproxy.upstream.connection import Chunk, Result, UpstreamProtocol
from imapproxy.upstream.errors import (
    AuthenticationFailed,
    UpstreamRefused,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from imapproxy.upstream.tls import (
    CertificateRefused,
    VerifiedClientTLS,
    check_certificate_names,
    client_tls_options,
)
from imapproxy.upstream.vanished import vanished_earlier

#: ``connect``'s mechanism for a password: LOGIN, or AUTHENTICATE PLAIN where LOGIN is off.
PASSWORD = "PASSWORD"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListEntry:
    name: str
    delimiter: str | None
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class SelectInfo:
    uidvalidity: int
    uidnext: int | None
    exists: int
    #: None without CONDSTORE in CAPABILITY, or for a mailbox without modseqs (NOMODSEQ).
    highestmodseq: int | None
    flags: tuple[str, ...]
    permanentflags: tuple[str, ...] | None
    #: Whether the QRESYNC parameter was taken (RFC 7162 §3.2.5): sent, the UIDVALIDITY
    #: it named still holds and the mailbox keeps modseqs. Only then do ``vanished`` and
    #: ``changed`` tell every expunge and flag change since the modseq it named.
    qresync: bool = False
    #: ``VANISHED (EARLIER)`` as sorted inclusive UID ranges: expunged since that modseq
    #: (may name UIDs never known). Ranges, not members: ``1:4294967295`` costs nothing.
    vanished: tuple[tuple[int, int], ...] = ()
    #: The FETCH responses (with UID and FLAGS) the SELECT carried: messages whose flags
    #: changed since then.
    changed: tuple[dict[str, Value], ...] = ()
    #: The answer to the UID FETCH pipelined behind the SELECT (``select``'s ``first``);
    #: None when none was sent or it was refused.
    first: tuple[dict[str, Value], ...] | None = None


def text(value: Value) -> str:
    """A string-ish IMAP value (atom, quoted, literal, number) as str."""
    if isinstance(value, Atom):
        return value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if value is None:
        return ""
    return str(value)


def as_int(value: Value) -> int:
    """A number the upstream sent (as a number, or an atom of digits); 0 when absent."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(text(value))


def modseq_of(value: Value) -> int:
    """A FETCH response's ``MODSEQ (n)`` as n."""
    if isinstance(value, tuple):
        return as_int(value[0]) if value else 0
    return as_int(value)


@dataclass(frozen=True)
class StoreOutcome:
    """What a STORE told: UIDs left alone because they changed meanwhile (MODIFIED),
    and the new MODSEQ of the messages it changed (CONDSTORE)."""

    modified: frozenset[int] = frozenset()
    modseqs: dict[int, int] = field(default_factory=dict)


def _atoms(values: Iterable[Value]) -> tuple[str, ...]:
    return tuple(text(v) for v in values)


def parse_copyuid(code: ResponseCode | None) -> tuple[int, list[int], list[int]] | None:
    """COPYUID uidvalidity source-set dest-set, as explicit lists in matching order."""
    if code is None or code.name != "COPYUID" or len(code.args) < 3:
        return None
    validity = int(text(code.args[0]))
    sources = _expand_ordered(text(code.args[1]))
    dests = _expand_ordered(text(code.args[2]))
    if len(sources) != len(dests):
        return None
    return validity, sources, dests


def _expand_ordered(set_text: str) -> list[int]:
    """A UID set as the upstream listed it; RFC 4315 pairs source and dest in this order."""
    out: list[int] = []
    for part in set_text.split(","):
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
    return out


#: The hard cap on an ordinary upstream command. A dead link is noticed much sooner,
#: by the connection's progress watchdog (STALL_SECONDS without a byte).
COMMAND_TIMEOUT = 120.0
#: Silence allowed for commands a server may work on before its first byte (a SEARCH
#: over bodies, COPY/MOVE/STORE/EXPUNGE of many messages, saving a large APPEND).
PATIENT_SECONDS = 30.0


class UpstreamClient:
    """A logged-in upstream connection with the operations the sync engine needs."""

    def __init__(self, protocol: UpstreamProtocol, capabilities: set[str]) -> None:
        self.protocol = protocol
        self.capabilities = capabilities
        self.selected: str | None = None
        self.selected_readonly = True
        #: UIDVALIDITY of the selected mailbox (replay checks the UIDs it names against it).
        self.selected_validity: int | None = None
        #: HIGHESTMODSEQ the selected mailbox reported (None: no CONDSTORE or NOMODSEQ).
        self.selected_highestmodseq: int | None = None
        #: Per mailbox name: whether the upstream lets clients create keywords (``\\*`` in
        #: PERMANENTFLAGS). Only a read-write SELECT tells (EXAMINE answers ``()``).
        self.keywords_allowed: dict[str, bool] = {}
        #: The OAuth mechanisms offered before login (AUTH=XOAUTH2, AUTH=OAUTHBEARER).
        self.offered_mechanisms: frozenset[str] = frozenset()
        #: Whether a SELECT/EXAMINE was ever sent here: ENABLE must come before the
        #: first one (RFC 5161 §3.1), so QRESYNC is enabled with it or never.
        self._selected_once = False
        #: ``ENABLE QRESYNC`` was answered with ``ENABLED QRESYNC``: SELECT takes the
        #: QRESYNC parameter, and the upstream reports expunges as VANISHED, never
        #: EXPUNGE (RFC 7162 §3.2.10), for the rest of the connection.
        self.qresync_enabled = False
        #: The upstream was seen to forget old expunges: the QRESYNC parameter carries
        #: sequence match data (sync/mailboxes.py decides, and says why).
        self.sequence_match = False
        #: The answer that made the current selection, and the protocol's tag count
        #: just after its command went: see still_selected.
        self._selection: tuple[SelectInfo, int] | None = None

    @property
    def qresync(self) -> bool:
        """Whether resyncs here can use SELECT's QRESYNC parameter (or still may: the
        first SELECT enables it)."""
        return self.qresync_enabled or (self.has("QRESYNC") and not self._selected_once)

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    @property
    def literal_plus(self) -> bool:
        return self.has("LITERAL+")

    async def _run(
        self,
        build: Callable[[str], Any],
        timeout: float | None = None,
        patience: float | None = None,
        consume: Callable[[UntaggedData], bool] | None = None,
    ) -> Result:
        return await self.protocol.run(
            lambda tag: _groups(build(tag), self.literal_plus),
            timeout=timeout,
            patience=patience,
            consume=consume,
        )

    # mailboxes ---------------------------------------------------------------

    async def list_mailboxes(self) -> list[ListEntry]:
        return _list_entries(await self._run(lambda tag: List(tag, "", ("*",))))

    async def list_and_subscriptions(self) -> tuple[list[ListEntry], set[str]]:
        """The mailbox list and which of them are subscribed: with LIST-EXTENDED in one
        round trip (``RETURN (SUBSCRIBED)``, RFC 5258 §3.2), else LIST and LSUB."""
        if not self.has("LIST-EXTENDED"):
            return await self.list_mailboxes(), await self.subscribed()
        # Plain LIST answers special-use and children attributes unasked; an extended
        # LIST only when asked (RFC 6154 §2, RFC 5258 §4).
        options = "SUBSCRIBED CHILDREN" + (" SPECIAL-USE" if self.has("SPECIAL-USE") else "")
        result = await self.protocol.run(
            lambda tag: [[f'{tag} LIST "" "*" RETURN ({options})\r\n'.encode()]]
        )
        entries, subscribed = [], set()
        for entry in _list_entries(result):
            upper = {a.upper() for a in entry.attributes}
            if "\\SUBSCRIBED" in upper:
                subscribed.add(entry.name)
            # What plain LIST says, so the replica is the same either way: \NonExistent
            # (a hierarchy level that is no mailbox) is \Noselect there (RFC 5258 §3.4).
            attributes = tuple(
                a for a in entry.attributes if a.upper() not in ("\\SUBSCRIBED", "\\NONEXISTENT")
            )
            if "\\NONEXISTENT" in upper and "\\NOSELECT" not in upper:
                attributes += ("\\Noselect",)
            entries.append(ListEntry(entry.name, entry.delimiter, attributes))
        return entries, subscribed

    async def subscribed(self) -> set[str]:
        result = await self._run(lambda tag: List(tag, "", ("*",), lsub=True))
        return {text(data.values[2]) for data in result.data("LSUB")}

    async def select(
        self,
        name: str,
        readonly: bool = True,
        qresync: QResync | None = None,
        first: tuple[SequenceSet, tuple[FetchAttribute, ...]] | None = None,
    ) -> SelectInfo:
        """SELECT (EXAMINE when readonly). Where the upstream offers QRESYNC, the first
        one on the connection carries ``ENABLE QRESYNC`` in front of it (pipelined, no
        round trip of its own); ``qresync`` (uidvalidity, modseq, known UIDs, sequence
        match) is then sent as SELECT's QRESYNC parameter, and the answer's VANISHED
        (EARLIER) and FETCH responses come back in SelectInfo. An upstream that takes
        the ENABLE but refuses the parameter (BAD) is asked again without it, and not
        offered it again on this connection.

        ``first`` (UIDs, items): a UID FETCH pipelined behind the SELECT, in the same
        write, for a mailbox the replica never had: its message list costs no round
        trip of its own. Its answer is ``SelectInfo.first``."""
        enable = self.has("QRESYNC") and not self._selected_once and not self.qresync_enabled
        use = qresync if (enable or self.qresync_enabled) else None
        try:
            return await self._select(name, readonly, use, enable, first)
        except UpstreamRefused as exc:
            if use is None or exc.status != "BAD":
                raise
            log.info("upstream refused SELECT's QRESYNC parameter (%s); not using it", exc.text)
            self.qresync_enabled = False
            return await self._select(name, readonly, None, False, first)

    async def _select(
        self,
        name: str,
        readonly: bool,
        qresync: QResync | None,
        enable: bool,
        first: tuple[SequenceSet, tuple[FetchAttribute, ...]] | None = None,
    ) -> SelectInfo:
        condstore = self.has("CONDSTORE")
        self.selected = None
        self._selected_once = True
        result = await self.protocol.run(
            lambda tag: self._select_groups(tag, name, readonly, qresync),
            before=(lambda tag: f"{tag} ENABLE QRESYNC\r\n".encode()) if enable else None,
            after=None if first is None else self._fetch_line(*first),
        )
        if enable:
            self._note_enabled(result)
        return self._selected(name, readonly, qresync, condstore, result, first is not None)

    async def examine_new(
        self, names: list[str], firsts: list[SequenceSet], items: tuple[FetchAttribute, ...]
    ) -> list[SelectInfo | UpstreamRefused]:
        """EXAMINE each of names, each with a UID FETCH of items at its ``firsts`` entry
        behind it, all in one write: the message lists of mailboxes the replica never
        had, for the cost of one round trip however many there are. Each answer is its
        mailbox's SelectInfo (its ``first``: the FETCH's answer), or the refusal of its
        EXAMINE; the last mailbox examined stays selected. Raises UpstreamRefused when
        the first EXAMINE is refused (the caller examines them one by one instead)."""
        if not names:
            return []
        if any(len(self._select_groups("T", name, True, None)) > 1 for name in names):
            raise UpstreamRefused("NO", None, "a mailbox name needs a synchronizing literal")
        enable = self.has("QRESYNC") and not self._selected_once and not self.qresync_enabled
        condstore = self.has("CONDSTORE")
        after: list[Callable[[str], bytes]] = [self._fetch_line(firsts[0], items)]
        for name, uids in zip(names[1:], firsts[1:], strict=True):
            after += (self._examine_line(name), self._fetch_line(uids, items))
        self.selected = None
        self._selected_once = True
        result = await self.protocol.run(
            lambda tag: self._select_groups(tag, names[0], True, None),
            before=(lambda tag: f"{tag} ENABLE QRESYNC\r\n".encode()) if enable else None,
            after=after,
        )
        if enable:
            self._note_enabled(result)
        infos: list[SelectInfo | UpstreamRefused] = []
        results = [result] + [
            Result(
                examined.tagged.code if examined.tagged else None,
                examined.tagged.text if examined.tagged else "",
                examined.untagged,
                followers=[fetched],
            )
            for examined, fetched in zip(
                result.followers[1::2], result.followers[2::2], strict=True
            )
        ]
        statuses = ["OK"] + [f.tagged.status if f.tagged else "NO" for f in result.followers[1::2]]
        for name, status, answer in zip(names, statuses, results, strict=True):
            if status != "OK":
                self.selected = None
                infos.append(UpstreamRefused(status, answer.code, answer.text))
                continue
            try:
                infos.append(self._selected(name, True, None, condstore, answer, True))
            except ValueError as exc:  # an EXAMINE answered without UIDVALIDITY or EXISTS
                infos.append(UpstreamRefused("NO", None, str(exc)))
        return infos

    def _examine_line(self, name: str) -> Callable[[str], bytes]:
        """A one-line EXAMINE of name (no literal in it) for ``run``'s ``after``."""

        def line(tag: str) -> bytes:
            [group] = self._select_groups(tag, name, True, None)
            return b"".join(group)

        return line

    def _select_groups(
        self, tag: str, name: str, readonly: bool, qresync: QResync | None
    ) -> list[list[bytes]]:
        condstore = self.has("CONDSTORE")
        return _groups(
            Select(
                tag,
                name,
                readonly=readonly,
                condstore=condstore and qresync is None,
                qresync=qresync,
            ),
            self.literal_plus,
        )

    def _note_enabled(self, result: Result) -> None:
        """Whether the ENABLE QRESYNC pipelined in front of a SELECT was taken."""
        self.qresync_enabled = (
            result.before is not None
            and result.before.status == "OK"
            and any(text(v).upper() == "QRESYNC" for d in result.data("ENABLED") for v in d.values)
        )

    def _selected(
        self,
        name: str,
        readonly: bool,
        qresync: QResync | None,
        condstore: bool,
        result: Result,
        first: bool,
    ) -> SelectInfo:
        """The connection's state after an OK to SELECT name, and what it said."""
        self.selected, self.selected_readonly = name, readonly
        codes = {c.name: c.args for c in result.codes()}
        validity = codes.get("UIDVALIDITY")
        self.selected_validity = int(text(validity[0])) if validity else None
        highest = codes.get("HIGHESTMODSEQ") if condstore or self.qresync_enabled else None
        #: None when the mailbox keeps no modseqs (NOMODSEQ) or the upstream lacks CONDSTORE.
        self.selected_highestmodseq = int(text(highest[0])) if highest else None
        exists = next((d.number for d in result.data("EXISTS") if d.number is not None), 0)
        flags = next((_atoms(d.values[0]) for d in result.data("FLAGS")), ())  # type: ignore[arg-type]

        def number(code: str) -> int | None:
            args = codes.get(code)
            return int(text(args[0])) if args else None

        uidvalidity = number("UIDVALIDITY")
        if not uidvalidity or not result.data("EXISTS"):
            # RFC 3501 6.3.1: both are required. Without them an OK would read as "the
            # mailbox is empty and renumbered" and wipe its replica: refuse the answer.
            self.selected = None
            raise ValueError(f"SELECT {name!r} answered without UIDVALIDITY or EXISTS")
        permanent = codes.get("PERMANENTFLAGS")
        if not readonly and permanent:
            allowed = "\\*" in _atoms(permanent[0])  # type: ignore[arg-type]
            self.keywords_allowed[name] = allowed
        taken = (
            qresync is not None
            and self.qresync_enabled
            and uidvalidity == qresync[0]
            and self.selected_highestmodseq is not None
        )
        info = SelectInfo(
            uidvalidity=uidvalidity,
            uidnext=number("UIDNEXT"),
            exists=exists,
            highestmodseq=self.selected_highestmodseq,
            flags=flags,
            permanentflags=_atoms(permanent[0]) if permanent else None,  # type: ignore[arg-type]
            qresync=taken,
            vanished=vanished_earlier(result.data("VANISHED")) if taken else (),
            # Only a FETCH with FLAGS says what the flags are (RFC 7162 §3.2.5.1).
            changed=tuple(i for i in _fetched_with_uid(result) if "FLAGS" in i) if taken else (),
            first=_pipelined_fetch(result) if first else None,
        )
        self._selection = (info, self.protocol.tags_issued)
        return info

    def still_selected(self, info: SelectInfo) -> bool:
        """Whether info answered the SELECT or EXAMINE that made the current selection,
        and no command has run here since (any command could have brought EXPUNGE or
        EXISTS, moving what sequence numbers mean): a first sync can go on from info's
        EXISTS without asking again. A look's pipeline sends all its commands before
        their answers come, so its last mailbox stays "still selected" until the next
        command."""
        if self._selection is None or self.selected is None:
            return False
        selection, tags = self._selection
        return selection is info and tags == self.protocol.tags_issued

    def _fetch_line(
        self, uids: SequenceSet, attributes: tuple[FetchAttribute, ...]
    ) -> Callable[[str], bytes]:
        """A one-line UID FETCH (no literal in it) for ``run``'s ``after``."""

        def line(tag: str) -> bytes:
            command = Fetch(tag, True, uids, (FetchAttribute("UID"), *attributes))
            return b"".join(format_command(command, self.literal_plus))

        return line

    async def ensure_selected(self, name: str, writable: bool = False) -> None:
        if self.selected != name or (writable and self.selected_readonly):
            await self.select(name, readonly=not writable)

    async def status(self, name: str, items: tuple[str, ...]) -> dict[str, int]:
        result = await self._run(lambda tag: Status(tag, name, items))
        for data in result.data("STATUS"):
            return _status_items(data)
        return {}

    def watch_items(self) -> tuple[str, ...]:
        """STATUS items that move whenever a mailbox changes in a way clients must hear."""
        items = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
        return items + ("HIGHESTMODSEQ",) if self.has("CONDSTORE") else items

    async def notify(
        self, names: Iterable[str], folder_list: bool = False
    ) -> dict[str, dict[str, int]]:
        """RFC 5465 NOTIFY SET: unsolicited ``* STATUS`` for these mailboxes whenever
        messages arrive, go, or change flags (none selected on this connection).
        ``folder_list``: also ``* LIST`` whenever a mailbox of the personal namespace is
        created, renamed or deleted, or a subscription changes (the events are named in
        both filters: the RFC leaves open which one rules a mailbox that both name).
        No names: NOTIFY NONE.

        With the STATUS indicator, the server states each watched mailbox in its answer
        (MESSAGES, UIDNEXT, UIDVALIDITY, and HIGHESTMODSEQ with CONDSTORE): returned by
        name, so a replica known to match needs no resync to count as current."""
        quoted = [_astring(name, self.literal_plus) for name in names]
        if not quoted:
            await self.protocol.run(lambda tag: [[f"{tag} NOTIFY NONE\r\n".encode()]])
            return {}

        def groups(tag: str) -> list[list[Chunk]]:
            out: list[list[Chunk]] = [[f"{tag} NOTIFY SET STATUS (mailboxes (".encode()]]
            for i, (head, literal) in enumerate(quoted):
                out[-1].append((b" " if i else b"") + head)
                if literal is not None:
                    if self.literal_plus:
                        out[-1].append(literal)
                    else:
                        out.append([literal])
            if folder_list:
                out[-1].append(
                    b") (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))"
                    b" (personal (MailboxName SubscriptionChange))\r\n"
                )
            else:
                out[-1].append(b") (MessageNew MessageExpunge FlagChange))\r\n")
            return out

        result = await self.protocol.run(groups)
        return {text(data.values[0]): _status_items(data) for data in result.data("STATUS")}

    async def create(self, name: str, special_use: tuple[str, ...] = ()) -> None:
        await self._run(lambda tag: Create(tag, name, special_use))

    async def delete(self, name: str) -> None:
        await self.leave(name)
        await self._run(lambda tag: Delete(tag, name))

    async def rename(self, old: str, new: str) -> None:
        await self.leave(old)
        await self._run(lambda tag: Rename(tag, old, new))

    async def leave(self, name: str) -> None:
        """Unselect name (or a mailbox under it) before it is deleted or renamed: Dovecot
        drops a session whose selected mailbox is deleted under it ("selected mailbox
        was deleted"), and the link would reconnect instead of answering. UNSELECT
        where offered, else a SELECT that fails, which also leaves the selected state
        (RFC 3501 §6.3.1) without CLOSE's expunge."""
        selected = self.selected
        if selected is None or not _under(selected, name):
            return
        self.selected = None
        self.selected_validity = None
        if self.has("UNSELECT"):
            await self._run(lambda tag: Unselect(tag))
            return
        try:
            await self._run(lambda tag: Select(tag, "\0imapproxy-none", readonly=True))
        except UpstreamRefused:
            pass

    async def subscribe(self, name: str, subscribed: bool) -> None:
        command = Subscribe if subscribed else Unsubscribe
        await self._run(lambda tag: command(tag, name))

    # messages ----------------------------------------------------------------

    async def fetch(
        self,
        uids: SequenceSet,
        attributes: tuple[FetchAttribute, ...],
        changedsince: int | None = None,
        by_sequence: bool = False,
    ) -> list[dict[str, Value]]:
        """UID FETCH (FETCH by message numbers with by_sequence); one dict per message,
        always with "UID" (FETCH responses without one are unsolicited flag updates and
        are left to on_untagged)."""
        attributes = (FetchAttribute("UID"), *attributes)
        result = await self._run(
            lambda tag: Fetch(tag, not by_sequence, uids, attributes, changedsince=changedsince),
            timeout=600.0,
        )
        return _fetched_with_uid(result)

    async def fetch_each(
        self,
        numbers: SequenceSet,
        attributes: tuple[FetchAttribute, ...],
        each: Callable[[dict[str, Value]], None],
        by_sequence: bool = False,
    ) -> None:
        """fetch, with each message's dict handed to ``each`` as its response arrives
        instead of all of them returned at the end: what is held is what ``each`` holds.

        Only responses with every item asked for count: a flag change made elsewhere
        meanwhile comes as an unsolicited FETCH, with a UID once QRESYNC is enabled
        (RFC 7162 §3.2.10), and is no message of the list; it is left to on_untagged."""
        attributes = (FetchAttribute("UID"), *attributes)
        asked = {a.response_name() for a in attributes}

        def consume(data: UntaggedData) -> bool:
            if data.name != "FETCH":
                return False
            items = fetch_items(data.values[0])  # type: ignore[arg-type]
            if not asked <= items.keys():
                return False
            each(items)
            return True

        await self._run(
            lambda tag: Fetch(tag, not by_sequence, numbers, attributes),
            timeout=600.0,
            consume=consume,
        )

    async def search_uids(self, uids: SequenceSet) -> set[int]:
        """Which of these UIDs still exist (expunge detection without refetching flags)."""
        return await self.search(SearchKey("AND", (SearchKey("UID", (uids,)),)))

    async def search(self, criteria: SearchKey, charset: str | None = None) -> set[int]:
        """UID SEARCH in the selected mailbox; with ESEARCH the answer comes as ranges."""
        esearch = self.has("ESEARCH")
        result = await self._run(
            lambda tag: Search(tag, True, charset, criteria, ("ALL",) if esearch else None),
            patience=PATIENT_SECONDS,
        )
        found: set[int] = set()
        for data in result.data("SEARCH"):
            found.update(as_int(v) for v in data.values)
        for data in result.data("ESEARCH"):
            for key, value in itertools.pairwise(data.values):
                if isinstance(key, Atom) and key.value.upper() == "ALL":
                    found.update(parse_sequence_set(text(value)).resolve(0))
        return found

    async def store(
        self,
        uids: SequenceSet,
        mode: str,
        flags: tuple[str, ...],
        unchangedsince: int | None = None,
    ) -> StoreOutcome:
        """``UID STORE uids [(UNCHANGEDSINCE m)] ±FLAGS.SILENT (flags)``.

        With UNCHANGEDSINCE (RFC 7162 §3.1.3) the upstream leaves alone every message
        changed after ``m`` and names it in ``[MODIFIED …]``; the others are changed and
        reported with their new MODSEQ (even with .SILENT)."""
        result = await self._run(
            lambda tag: Store(tag, True, uids, mode, True, flags, unchangedsince),
            patience=PATIENT_SECONDS,
        )
        modified: set[int] = set()
        for code in result.codes():
            if code.name == "MODIFIED" and code.args:
                modified.update(parse_sequence_set(text(code.args[0])).resolve(0))
        modseqs: dict[int, int] = {}
        for data in result.data("FETCH"):
            items = fetch_items(data.values[0])  # type: ignore[arg-type]
            if "UID" in items and "MODSEQ" in items:
                modseqs[as_int(items["UID"])] = modseq_of(items["MODSEQ"])
        return StoreOutcome(frozenset(modified), modseqs)

    async def copy(
        self, uids: SequenceSet, target: str, move: bool = False
    ) -> tuple[int, list[int], list[int]] | None:
        command = Move if move else Copy
        result = await self._run(
            lambda tag: command(tag, True, uids, target), patience=PATIENT_SECONDS
        )
        for code in result.codes():
            if code.name == "COPYUID":
                return parse_copyuid(code)
        return None

    async def expunge(self, uids: SequenceSet) -> None:
        if not self.has("UIDPLUS"):
            raise UpstreamRefused("NO", None, "upstream lacks UIDPLUS; UID EXPUNGE is required")
        await self._run(lambda tag: Expunge(tag, uids), patience=PATIENT_SECONDS)

    async def append(
        self,
        mailbox: str,
        flags: tuple[str, ...],
        internal_date: datetime | None,
        message: bytes | bytearray,
    ) -> tuple[int, int] | None:
        """APPEND, streaming the message after its literal header; returns APPENDUID."""
        literal_plus = self.literal_plus

        def groups(tag: str) -> list[list[Chunk]]:
            head = format_append_start(
                tag, mailbox, flags, internal_date, len(message), literal_plus
            )
            if literal_plus:
                return [[head, message, b"\r\n"]]
            return [[head], [message, b"\r\n"]]

        result = await self.protocol.run(groups, timeout=600.0, patience=PATIENT_SECONDS)
        for code in result.codes():
            if code.name == "APPENDUID" and len(code.args) >= 2:
                return int(text(code.args[0])), int(text(code.args[1]))
        return None

    async def noop(self) -> None:
        from imapproxy.protocol import Noop

        await self._run(lambda tag: Noop(tag))

    async def logout(self) -> None:
        try:
            await self._run(lambda tag: Logout(tag), timeout=5.0)
        except (UpstreamUnavailable, UpstreamRefused):
            pass
        self.protocol.abort()


async def _capabilities(
    protocol: UpstreamProtocol, literal_plus: bool, code: ResponseCode | None
) -> set[str]:
    if code is not None and code.name == "CAPABILITY":
        return {text(v).upper() for v in code.args}
    result = await protocol.run(lambda tag: _groups(Capability(tag), literal_plus))
    return {text(v).upper() for d in result.data("CAPABILITY") for v in d.values}


async def connect(
    reactor: Any,
    address: UpstreamAddress,
    username: bytes,
    password: bytes,
    ca_file: Path | None = None,
    clock: IReactorTime | None = None,
    timeout: float = 30.0,
    mechanism: str | None = PASSWORD,
) -> UpstreamClient:
    """Open, secure and log in one upstream connection.

    ``mechanism`` says what ``password`` is: a password (LOGIN, else AUTHENTICATE
    PLAIN), or a bearer token for XOAUTH2 or OAUTHBEARER. None opens and secures the
    connection without logging in (``probe``).

    Raises AuthenticationFailed for rejected credentials and UpstreamUnreachable for
    everything else that keeps us from a logged-in connection (refused, timed out,
    TLS verification failed, no STARTTLS): callers know nothing of theirs was sent.
    """
    clock = clock or reactor
    # One TLS object per attempt: it records why a certificate was refused. None for a
    # plain connection: building one loads the CA bundle, about 10 ms of CPU.
    tls = None if address.security is Security.PLAIN else client_tls_options(address.host, ca_file)
    endpoint: Any = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    if address.security is Security.TLS:
        endpoint = wrapClientTLS(_required(tls), endpoint)  # type: ignore[arg-type]
    try:
        protocol: UpstreamProtocol = await endpoint.connect(
            Factory.forProtocol(lambda: UpstreamProtocol(clock, command_timeout=timeout))
        )
    except Exception as exc:
        raise UpstreamUnreachable(f"cannot connect to {address.url()}: {exc}") from exc
    try:
        return await _open(protocol, address, username, password, tls, clock, timeout, mechanism)
    except AuthenticationFailed:
        protocol.abort()
        raise
    except Exception as exc:
        protocol.abort()
        if tls is not None and tls.refusal is not None:
            raise UpstreamUnreachable(f"{address.url()}: {tls.refusal}") from None
        if isinstance(exc, UpstreamUnreachable):
            raise
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, defer.TimeoutError):
            reason = f"no answer within {timeout:.0f} s"
        raise UpstreamUnreachable(f"cannot open a session on {address.url()}: {reason}") from exc


def _required(tls: VerifiedClientTLS | None) -> VerifiedClientTLS:
    """The TLS options a secured connection needs; without them it fails (closed)."""
    if tls is None:
        raise UpstreamUnreachable("no TLS options for a connection that must be secured")
    return tls


async def _open(
    protocol: UpstreamProtocol,
    address: UpstreamAddress,
    username: bytes,
    password: bytes,
    tls: VerifiedClientTLS | None,
    clock: IReactorTime,
    timeout: float,
    mechanism: str | None,
) -> UpstreamClient:
    greeting = await protocol.greeting.addTimeout(timeout, clock)
    if greeting.status == "BYE":
        raise UpstreamUnreachable(f"upstream refused the connection: {greeting.text}")
    capabilities = await _capabilities(protocol, False, greeting.code)
    if address.security is Security.STARTTLS:
        if "STARTTLS" not in capabilities:
            raise UpstreamUnreachable("upstream does not offer STARTTLS, which imap:// requires")
        try:
            await protocol.run(lambda tag: _groups(StartTLS(tag), False))
        except UpstreamRefused as exc:
            raise UpstreamUnreachable(f"upstream refused STARTTLS: {exc.text}") from None
        if protocol.reader.buffered():
            # Bytes behind the OK, sent in clear, would be read as if they came over TLS.
            raise UpstreamUnreachable(
                "upstream sent data after its STARTTLS answer, before TLS began "
                "(a STARTTLS injection); refused"
            )
        protocol.reader = ResponseReader(raw_fetch_items=RAW_FETCH_ITEMS)
        protocol.transport.startTLS(_required(tls))
        capabilities = await _capabilities(protocol, False, None)
    if address.security is not Security.PLAIN:
        _ensure_verified(protocol, _required(tls), address.host)
    client = UpstreamClient(protocol, capabilities)
    client.offered_mechanisms = offered_mechanisms(capabilities)
    if mechanism is None:
        return client
    if mechanism == PASSWORD:
        result = await _login(client, username, password)
    else:
        result = await sasl_login.bearer_login(
            client.protocol,
            client.capabilities,
            address,
            BearerLogin(mechanism, username, password),
        )
    client.capabilities = await _capabilities(
        protocol, client.literal_plus, _capability_code(result)
    )
    # No ENABLE CONDSTORE: every SELECT/EXAMINE names CONDSTORE (RFC 7162 §3.1), which
    # enables it where it matters, and the ENABLE would cost a round trip per connection.
    if client.has("COMPRESS=DEFLATE"):
        await _compress(protocol)
    protocol.command_timeout = COMMAND_TIMEOUT
    return client


async def _compress(protocol: UpstreamProtocol) -> None:
    """RFC 4978 where the upstream offers it: headers and bodies shrink three to five
    times on the wire, which is what a metered or slow uplink pays for. A refusal
    leaves the connection as it was."""
    try:
        await protocol.compress()
    except UpstreamRefused as exc:
        log.info("upstream refused COMPRESS DEFLATE: %s", exc.text)


def _pipelined_fetch(result: Result) -> tuple[dict[str, Value], ...] | None:
    """The FETCH answers behind the SELECT (``run``'s ``after``); None if refused."""
    if result.after is None or result.after.status != "OK":
        return None
    fetched = [u for u in result.after_untagged if isinstance(u, UntaggedData)]
    return tuple(_with_uid(u for u in fetched if u.name == "FETCH"))


def _fetched_with_uid(result: Result) -> list[dict[str, Value]]:
    """The FETCH responses of an answer that name their UID, as dicts."""
    return _with_uid(result.data("FETCH"))


def _with_uid(responses: Iterable[UntaggedData]) -> list[dict[str, Value]]:
    out = []
    for data in responses:
        items = fetch_items(data.values[0])  # type: ignore[arg-type]
        if "UID" in items:
            out.append(items)
    return out


def _list_entries(result: Result) -> list[ListEntry]:
    entries = []
    for data in result.data("LIST"):
        attrs, delimiter, name = data.values[0], data.values[1], data.values[2]
        assert isinstance(attrs, tuple)
        entries.append(
            ListEntry(text(name), None if delimiter is None else text(delimiter), _atoms(attrs))
        )
    return entries


def _ensure_verified(protocol: UpstreamProtocol, tls: VerifiedClientTLS, host: str) -> None:
    """The last gate before credentials go out: the handshake's own checks passed, and
    the certificate the session actually uses names the host. Redundant by design."""
    if not tls.leaf_checked or tls.refusal is not None:
        raise UpstreamUnreachable(
            tls.refusal or f"the certificate of {host} was not verified; refusing to log in"
        )
    try:
        check_certificate_names(protocol.transport.getPeerCertificate(), host)
    except CertificateRefused as exc:
        raise UpstreamUnreachable(str(exc)) from None


#: A name no one uses: selecting it fails, which leaves the selected state.
NO_MAILBOX = "imapproxy-no-such-mailbox-to-unselect"


def _under(selected: str, name: str) -> bool:
    """Whether selected is name or inside it (the delimiter is not known here: a
    needless UNSELECT costs a round trip, a missing one the connection)."""
    return selected == name or (
        selected.startswith(name)
        and len(selected) > len(name)
        and not selected[len(name)].isalnum()
    )


def _astring(name: str, literal_plus: bool) -> tuple[bytes, bytes | None]:
    """A mailbox name as a quoted string, or as a literal: its ``{n}`` (``{n+}`` with
    LITERAL+) head and its data."""
    data = name.encode("utf-8", "surrogateescape")
    if all(0x20 <= b < 0x7F for b in data) and len(data) < 1000:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', None
    return (b"{%d+}\r\n" if literal_plus else b"{%d}\r\n") % len(data), data


def _groups(command: Any, literal_plus: bool) -> list[list[bytes]]:
    return [[chunk] for chunk in format_command(command, literal_plus)]


def _capability_code(result: Result) -> ResponseCode | None:
    return result.code if result.code is not None and result.code.name == "CAPABILITY" else None


async def probe(
    reactor: Any, address: UpstreamAddress, ca_file: Path | None = None, timeout: float = 30.0
) -> frozenset[str]:
    """The OAuth mechanisms the upstream offers before login (nothing of ours is sent)."""
    client = await connect(reactor, address, b"", b"", ca_file, timeout=timeout, mechanism=None)
    await client.logout()
    return client.offered_mechanisms


def offered_mechanisms(capabilities: set[str]) -> frozenset[str]:
    """The ``AUTH=`` OAuth mechanisms among pre-login capabilities."""
    return frozenset(m for m in MECHANISMS if f"AUTH={m}" in capabilities)


async def _login(client: UpstreamClient, username: bytes, password: bytes) -> Result:
    try:
        if "LOGINDISABLED" not in client.capabilities:
            return await client._run(lambda tag: Login(tag, username, password))
        if "AUTH=PLAIN" not in client.capabilities:
            raise UpstreamUnavailable("upstream allows neither LOGIN nor AUTHENTICATE PLAIN")
        token = base64.b64encode(b"\0" + username + b"\0" + password)

        def answer(_: ContinuationRequest) -> None:
            client.protocol.write(token + b"\r\n")

        return await client.protocol.run(
            lambda tag: [[f"{tag} AUTHENTICATE PLAIN\r\n".encode()]], answer
        )
    except UpstreamRefused as exc:
        raise AuthenticationFailed(exc.status, exc.code, exc.text) from None


def _status_items(data: UntaggedData) -> dict[str, int]:
    """``* STATUS name (ITEM n ...)`` as {ITEM: n}."""
    pairs = data.values[1]
    assert isinstance(pairs, tuple)
    return {text(k).upper(): int(text(v)) for k, v in zip(pairs[::2], pairs[1::2], strict=False)}
