"""What SELECT's QRESYNC parameter says of a mailbox the replica holds (RFC 7162 §3.2.5).

The parameter names the last UIDVALIDITY and HIGHESTMODSEQ synced and the known UIDs
(``1:highest``: a few bytes however many messages); the upstream answers with every
flag change and expunge since, in the EXAMINE's own answer (sync/mailboxes.py applies
it). Sequence match data (§3.2.5.2) is optional and sent only where it pays: to an
upstream seen to have forgotten old expunges.
"""

from __future__ import annotations

import logging

from imapproxy.protocol import QResync, SequenceSet
from imapproxy.store.mailboxes import Mailbox
from imapproxy.upstream.client import SelectInfo, UpstreamClient

log = logging.getLogger(__name__)

#: Below this many known messages the QRESYNC parameter goes without sequence match
#: data: the upstream's worst case (it forgot old expunges and names every gap in the
#: known range) costs less than the pairs would.
SEQUENCE_MATCH_MIN = 64
#: A VANISHED (EARLIER) naming more than this many UIDs the replica did not hold shows
#: an upstream that no longer remembers the expunges since the modseq asked about (it
#: names every gap in the range, RFC 7162 §3.2.5.2): from then on, on that connection,
#: the QRESYNC parameter carries sequence match data. (A few such UIDs are usual: our
#: own expunges, replayed, come back in VANISHED.)
FORGETFUL_MIN = 100


def qresync_parameter(client: UpstreamClient, mailbox: Mailbox, known: list[int]) -> QResync | None:
    """SELECT's QRESYNC parameter for a mailbox the replica has synced with modseqs:
    (uidvalidity, modseq, the known UID range, sequence match data). The range is
    1:highest-synced-UID, a few bytes however many messages. The match data (RFC 7162
    §3.2.5.2) samples about log2(n) (message number, UID) pairs, dense towards the end,
    so an upstream that no longer remembers old expunges names only the gaps after the
    last pair that matches instead of every one in the range; it is sent only where
    that pays, once the upstream was seen to forget (``FORGETFUL_MIN``): to one that
    remembers, as Dovecot does, it would be a few hundred bytes per resync for nothing."""
    last_uid = mailbox.upstream_last_uid
    if (
        not client.qresync
        or not last_uid
        or mailbox.upstream_uidvalidity is None
        or not mailbox.upstream_highestmodseq
    ):
        return None
    synced = [up for up in known if up <= last_uid]
    match = None
    if client.sequence_match and len(synced) >= SEQUENCE_MATCH_MIN:
        numbers = sequence_sample(len(synced))
        match = (
            SequenceSet.from_ints(numbers),
            SequenceSet.from_ints([synced[n - 1] for n in numbers]),
        )
    return (
        mailbox.upstream_uidvalidity,
        mailbox.upstream_highestmodseq,
        SequenceSet(((1, last_uid),)),
        match,
    )


def note_forgetful(client: UpstreamClient, info: SelectInfo, last_uid: int, gone: int) -> None:
    """Whether the VANISHED (EARLIER) just read named many UIDs the replica never held
    (``gone`` of those it did): then sequence match data pays on this connection."""
    named = sum(min(hi, last_uid) - lo + 1 for lo, hi in info.vanished if lo <= last_uid)
    if named - gone > FORGETFUL_MIN and not client.sequence_match:
        log.info(
            "upstream named %d UIDs expunged long ago in VANISHED; sending sequence match"
            " data from now on",
            named - gone,
        )
        client.sequence_match = True


def sequence_sample(count: int) -> list[int]:
    """Message numbers 1..count to send as sequence match data: count, count-1,
    count-3, count-7, ... (powers of two back from the end), ascending."""
    out, step = set(), 1
    while step <= count:
        out.add(count - step + 1)
        step *= 2
    return sorted(out)
