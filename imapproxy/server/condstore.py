"""CONDSTORE and QRESYNC (RFC 7162) towards clients, on the replica's own modseqs.

Every change the replica takes (a client's STORE, the sync engine's news, an expunge
from anywhere) bumps its mailbox's modseq and stamps the message, and an expunge is
logged with its modseq (store/mailboxes.py), so a client that comes back after any
time, online or offline, is told exactly what changed since the modseq it knew:
flag changes as FETCH (UID FLAGS MODSEQ), expunges as VANISHED (EARLIER).
"""

from __future__ import annotations

from collections.abc import Iterator

from imapproxy import protocol as p
from imapproxy.protocol import QResync
from imapproxy.server import replies
from imapproxy.server.view import Modes, SelectedView, contains, intervals
from imapproxy.store import mailboxes, messages
from imapproxy.store.messages import Message
from imapproxy.types import UID, SeqNum


def enable_condstore(modes: Modes, view: SelectedView | None) -> list[bytes]:
    """A CONDSTORE enabling command (RFC 7162 §3.1): from now on every untagged FETCH
    carries MODSEQ; the first one with a mailbox selected tells its HIGHESTMODSEQ."""
    if modes.condstore:
        return []
    modes.condstore = True
    if view is None:
        return []
    return highestmodseq_line(view)


def highestmodseq(view: SelectedView) -> int:
    mailbox = view.mailbox
    current = view.store.read(lambda tx: mailboxes.get(tx, mailbox.account, mailbox.id))
    return (current or mailbox).highestmodseq


def highestmodseq_line(view: SelectedView) -> list[bytes]:
    code = replies.code("HIGHESTMODSEQ", highestmodseq(view))
    return replies.untagged_status("OK", "highest modseq", code)


def vanished_earlier(view: SelectedView, since: int, uids: p.SequenceSet) -> list[bytes]:
    """``VANISHED (EARLIER)`` for the UIDs in uids expunged after modseq since."""
    mailbox = view.mailbox
    gone = view.store.read(lambda tx: mailboxes.expunged_since(tx, mailbox, since))
    spans = intervals(uids, max(mailbox.uidnext - 1, 1))
    named = [uid for uid in gone if contains(spans, uid)]
    return _vanished(named)


def _vanished(uids: list[UID]) -> list[bytes]:
    if not uids:
        return []
    earlier = (p.Atom("EARLIER"),)
    return replies.untagged("VANISHED", earlier, p.Atom(str(p.SequenceSet.from_ints(uids))))


def changed_since(view: SelectedView, since: int, uids: list[UID]) -> list[Message]:
    mailbox = view.mailbox
    found = view.store.read(lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, uids))
    return [m for m in found if m.modseq > since]


def qresync_select(view: SelectedView, params: QResync) -> list[bytes]:
    """What SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids [seq-match]])) adds
    after the usual responses (RFC 7162 §3.2.5): nothing on a UIDVALIDITY mismatch;
    otherwise VANISHED (EARLIER), then a FETCH (UID FLAGS MODSEQ) per changed message."""
    validity, since, known, seq_match = params
    mailbox = view.mailbox
    if validity != mailbox.uidvalidity:
        return []
    if known is None:
        known = p.SequenceSet(((1, max(mailbox.uidnext - 1, 1)),))
    lowest = _known_up_to(view, seq_match) if seq_match is not None else 0
    gone = view.store.read(lambda tx: mailboxes.expunged_since(tx, mailbox, since))
    spans = intervals(known, max(mailbox.uidnext - 1, 1))
    gone_lines = _vanished([uid for uid in gone if uid > lowest and contains(spans, uid)])
    pairs = view.resolve(known, by_uid=True)
    out = list(gone_lines)
    for message in changed_since(view, since, [uid for _, uid in pairs]):
        seq = view.seq(message.uid)
        if seq is not None:
            out += _fetch_line(view, seq, message)
    return out


def _fetch_line(view: SelectedView, seq: SeqNum, message: Message) -> list[bytes]:
    items: tuple[p.Value, ...] = (
        p.Atom("UID"),
        message.uid,
        p.Atom("FLAGS"),
        view.flags_of(message),
        p.Atom("MODSEQ"),
        (message.modseq,),
    )
    return replies.untagged("FETCH", items, number=seq)


def _known_up_to(view: SelectedView, seq_match: tuple[p.SequenceSet, p.SequenceSet]) -> int:
    """The highest UID up to which the client's (sequence number, UID) samples still
    match the mailbox: it already knows of every expunge below it (RFC 7162 §3.2.5.2).
    Lazy: a sample set of 1:4294967295 costs at most the mailbox's size."""
    known = 0
    for seq, uid in zip(_numbers(seq_match[0]), _numbers(seq_match[1]), strict=False):
        if 1 <= seq <= len(view.uids) and view.uids[seq - 1] == uid:
            known = uid
        else:
            break
    return known


def _numbers(sequence_set: p.SequenceSet) -> Iterator[int]:
    """The numbers in the order sent; ``*`` cannot name a sample, so it ends the list."""
    for lo, hi in sequence_set.ranges:
        if lo is None or hi is None:
            return
        yield from range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1)
