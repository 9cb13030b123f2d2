"""A session's view of its selected mailbox: sequence numbers and pending news.

The view is the one piece of state a session keeps: the list of UIDs its client
knows, in sequence order. Changes from other sessions and from the upstream are
queued here and told to the client only when RFC 3501 §7.4.1 / RFC 9051 §7.5.1
allow (no EXPUNGE during FETCH, STORE or SEARCH; EXISTS never decreases until the
matching EXPUNGEs are sent), so sequence numbers never shift under a command.

It also keeps what is per session by nature: which messages are \\Recent here (the
first session to see a message claims it, RFC 3501 §2.3.2), and which keywords its
client was told exist — a FETCH never shows a keyword before a FLAGS response has
announced it (RFC 3501 §7.2.6).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from imapproxy.notify import MailboxChange
from imapproxy.protocol import Atom, SequenceSet, Value
from imapproxy.server import replies
from imapproxy.store import Store, Tx, mailboxes, messages
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.types import UID, SeqNum

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@dataclass
class Modes:
    """What a client turned on for its whole connection (RFC 7162 §3.1, §3.2.3)."""

    #: MODSEQ in every untagged FETCH, HIGHESTMODSEQ on SELECT/EXAMINE.
    condstore: bool = False
    #: VANISHED instead of EXPUNGE; SELECT (QRESYNC …) and UID FETCH (… VANISHED).
    qresync: bool = False
    #: ENABLE IMAP4rev2 (RFC 9051): UTF-8 names, no \\Recent, ESEARCH (see rev2.py).
    rev2: bool = False


class SelectedView:
    def __init__(
        self,
        store: Store,
        mailbox: Mailbox,
        readonly: bool,
        origin: object,
        modes: Modes | None = None,
    ) -> None:
        self.store = store
        self.mailbox = mailbox
        self.readonly = readonly
        self.origin = origin
        self.modes = modes if modes is not None else Modes()
        #: Every change up to this modseq has been told to the client (a HIGHESTMODSEQ
        #: it may rely on while an expunge still waits to be told, RFC 7162 §3.2).
        self.told_modseq = 0
        self.uids: list[UID] = []
        self.recent: set[UID] = set()
        #: Keywords the client was told of (FLAGS), upper-cased -> as spelled.
        self.keywords: dict[str, str] = {}
        self._expunged: set[UID] = set()
        self._flags: set[UID] = set()
        #: Messages whose flags this session changed itself: no FETCH, but a keyword
        #: they introduced still needs a FLAGS response.
        self._own_flags: set[UID] = set()
        self._added = False
        self.deleted = False
        #: The SEARCHRES ``$`` (RFC 5182): empty on each SELECT, as this view is new.
        self.saved: frozenset[UID] = frozenset()
        self._open()

    def _open(self) -> None:
        """Take the mailbox's UIDs and claim what is \\Recent, in one transaction."""
        mailbox = self.mailbox

        def open_(tx: Tx) -> tuple[list[UID], set[UID], Mailbox]:
            uids = messages.uids(tx, mailbox.account, mailbox.id)
            current = mailboxes.get(tx, mailbox.account, mailbox.id) or mailbox
            return uids, mailboxes.claim_recent(tx, mailbox, uids, not self.readonly), current

        run = self.store.read if self.readonly else self.store.write
        self.uids, self.recent, self.mailbox = run(open_)
        self.told_modseq = self.mailbox.highestmodseq

    # news ------------------------------------------------------------------

    def on_change(self, change: MailboxChange) -> None:
        self._expunged.update(change.expunged)
        if change.origin is not self.origin:
            self._flags.update(change.flags)
        else:
            self._own_flags.update(change.flags)
        self._added = self._added or change.added
        self.deleted = self.deleted or change.deleted

    def forget_flag_news(self, uids: Iterable[UID]) -> None:
        """This session already told its client these flags (a non-silent STORE)."""
        self._flags.difference_update(uids)

    def updates(self, allow_expunge: bool) -> list[bytes]:
        """Untagged responses for the queued news, applying them to the view."""
        out: list[bytes] = []
        if allow_expunge and self._expunged:
            out += self._expunge_lines()
        new: list[UID] = []
        if self._added:
            self._added = False
            new = self._take_new()
        wanted = sorted(self._flags | self._own_flags | set(new))
        fetched = set(self._flags)
        self._flags.clear()
        self._own_flags.clear()
        found = (
            self.store.read(
                lambda tx: messages.get_many(tx, self.mailbox.account, self.mailbox.id, wanted)
            )
            if wanted
            else []
        )
        out += self.keyword_news(m.flags for m in found)
        if new:
            out += replies.untagged("EXISTS", number=len(self.uids))
            if self.recent.intersection(new):
                out += replies.untagged("RECENT", number=len(self.recent))
        changed: list[bytes] = []
        for message in found:
            seq = self.seq(message.uid)
            if seq is not None and message.uid in fetched:
                changed += self.fetch_flags(seq, message)
        if changed:
            # Expunges may still wait (none during FETCH/STORE/SEARCH) while these
            # FETCHes carry higher modseqs.
            out += self.modseq_guard()
        if self.modes.condstore and not self._expunged:
            # All news is told: the client is in step up to the mailbox's modseq.
            current = self.store.read(
                lambda tx: mailboxes.get(tx, self.mailbox.account, self.mailbox.id)
            )
            if current is not None:
                self.told_modseq = current.highestmodseq
        return out + changed

    def _expunge_lines(self) -> list[bytes]:
        out: list[bytes] = []
        gone = sorted(self._expunged & set(self.uids))
        if self.modes.qresync and gone:
            # RFC 7162 §3.2.10.2: UIDs, one response, the sequence numbers shift as usual.
            for uid in reversed(gone):
                seq = self.seq(uid)
                if seq is not None:
                    del self.uids[seq - 1]
            out += replies.untagged("VANISHED", Atom(str(SequenceSet.from_ints(gone))))
        else:
            # Highest sequence number first, so each number is valid when sent.
            for uid in reversed(gone):
                seq = self.seq(uid)
                if seq is not None:
                    del self.uids[seq - 1]
                    out += replies.untagged("EXPUNGE", number=seq)
        self.recent -= self._expunged
        self._expunged.clear()
        return out

    def modseq_guard(self) -> list[bytes]:
        """``OK [HIGHESTMODSEQ n]`` below any expunge not yet told, when one waits: a
        client that saw higher MODSEQs in FETCHes and then lost the connection must
        not resync from past the expunge (RFC 7162 §3.2)."""
        if not (self._expunged and self.modes.condstore):
            return []
        code = replies.code("HIGHESTMODSEQ", self.told_modseq)
        return replies.untagged_status("OK", "expunges pending", code)

    def _take_new(self) -> list[UID]:
        """Messages added since the client last heard: appended to the view, and
        claimed as \\Recent by this session if it is the first to see them."""
        mailbox = self.mailbox
        highest = self.uids[-1] if self.uids else 0

        def take(tx: Tx) -> tuple[list[UID], set[UID]]:
            current = messages.uids(tx, mailbox.account, mailbox.id)
            new = current[bisect_right(current, highest) :]
            recent = mailboxes.claim_recent(tx, mailbox, new, claim=not self.readonly)
            return new, recent

        run = self.store.read if self.readonly else self.store.write
        new, recent = run(take)
        self.uids.extend(new)
        self.recent |= recent
        return new

    # flags -------------------------------------------------------------------

    def flags_of(self, message: Message) -> tuple[Value, ...]:
        """The message's flags as this session shows them (\\Recent is per session)."""
        flags = replies.atoms(message.flags)
        if message.uid in self.recent and not self.modes.rev2:  # RFC 9051 Appendix E.12
            return (*flags, Atom("\\Recent"))
        return flags

    def fetch_flags(self, seq: SeqNum, message: Message, flags: bool = True) -> list[bytes]:
        """An untagged FETCH of a message's flags (and modseq, for CONDSTORE clients)."""
        items: tuple[Value, ...] = (Atom("UID"), message.uid)
        if flags:
            items += (Atom("FLAGS"), self.flags_of(message))
        if self.modes.condstore:
            items += (Atom("MODSEQ"), (message.modseq,))
        return replies.untagged("FETCH", items, number=seq)

    def announce_keywords(self, keywords: Iterable[str]) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS for the keywords known now (SELECT, and each time a
        new one appears), remembering them as told."""
        for keyword in keywords:
            self.keywords.setdefault(keyword.upper(), keyword)
        flags = (*SYSTEM_FLAGS, *self.keywords.values())
        # \\* only where the upstream lets keywords be created (RFC 3501 §7.1).
        creatable = ("\\*",) if self.mailbox.new_keywords else ()
        permanent = () if self.readonly else (*flags, *creatable)
        return replies.untagged("FLAGS", replies.atoms(flags)) + replies.untagged_status(
            "OK", "permanent flags", replies.code("PERMANENTFLAGS", replies.atoms(permanent))
        )

    def keyword_news(self, flag_sets: Iterable[Iterable[str]]) -> list[bytes]:
        """FLAGS/PERMANENTFLAGS if these flags hold a keyword the client was not told of;
        send before any FETCH that shows them."""
        unknown = [
            flag
            for flags in flag_sets
            for flag in flags
            if not flag.startswith("\\") and flag.upper() not in self.keywords
        ]
        return self.announce_keywords(unknown) if unknown else []

    # sequence numbers --------------------------------------------------------

    def seq(self, uid: UID) -> SeqNum | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return SeqNum(i + 1)
        return None

    def resolve(self, sequence_set: SequenceSet, by_uid: bool) -> list[tuple[SeqNum, UID]]:
        """(seq, uid) pairs the set names, in sequence order (see ``resolve_lazily``)."""
        return list(self.resolve_lazily(sequence_set, by_uid))

    def resolve_lazily(
        self, sequence_set: SequenceSet, by_uid: bool
    ) -> Iterator[tuple[SeqNum, UID]]:
        """(seq, uid) pairs the set names, in sequence order; unknown numbers are skipped.

        The pairs are made as they are taken, from the UID list as it is now: a FETCH
        of a whole large mailbox holds one group of them at a time, not 100,000 tuples.
        The set is checked before this returns.

        Work is O(ranges · log + messages named), never O(highest UID): a UID range is
        cut out of the sorted UID list by bisection, so ``UID FETCH 1:4294967295`` on a
        sparse mailbox costs what the mailbox holds.

        Raises CommandFailed for a message sequence number beyond EXISTS (RFC 9051 §6.4.4).
        ``$`` names the saved messages still here, whether by UID or not (RFC 5182 §2.1).
        """
        if sequence_set.saved:
            pairs = ((self.seq(uid), uid) for uid in sorted(self.saved))
            return iter([(seq, uid) for seq, uid in pairs if seq is not None])
        if by_uid:
            spans = [
                (bisect_left(self.uids, lo), bisect_right(self.uids, hi))
                for lo, hi in intervals(sequence_set, self.uids[-1] if self.uids else 0)
            ]
        else:
            count = len(self.uids)
            ranges = _ranges(sequence_set, count)
            # Each range as sent: merged, "3:4,5" would hide a 5 beyond EXISTS 4.
            if any(lo < 1 or lo > count for lo, _ in ranges):
                raise replies.CommandFailed("message sequence number out of range", status="BAD")
            spans = [(lo - 1, min(hi, count)) for lo, hi in _merged(ranges)]
        # Slices: a later change of the view does not move these pairs.
        named = [(start, self.uids[start:end]) for start, end in spans]
        return ((SeqNum(start + i + 1), uid) for start, uids in named for i, uid in enumerate(uids))


def intervals(sequence_set: SequenceSet, largest: int) -> list[tuple[int, int]]:
    """The set as sorted, disjoint, inclusive (lo, hi) ranges, with ``*`` as ``largest``.

    Merged, so a set repeating ``1:*`` thousands of times costs no more than one ``1:*``
    later on.
    """
    return _merged(_ranges(sequence_set, largest))


def _ranges(sequence_set: SequenceSet, largest: int) -> list[tuple[int, int]]:
    """Each range as (lo, hi); one with ``*`` names nothing when there is no message."""
    ranges: list[tuple[int, int]] = []
    for start, end in sequence_set.ranges:
        if largest == 0 and (start is None or end is None):
            continue
        a = largest if start is None else start
        b = largest if end is None else end
        ranges.append((min(a, b), max(a, b)))
    return ranges


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def contains(spans: list[tuple[int, int]], number: int) -> bool:
    """Whether number is in the sorted, disjoint ranges ``intervals`` returned."""
    i = bisect_right(spans, (number, _NO_LIMIT)) - 1
    return i >= 0 and spans[i][0] <= number <= spans[i][1]


_NO_LIMIT = 2**64
