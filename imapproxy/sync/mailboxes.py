"""Reconcile each mailbox's messages into the replica (the mailbox list: mailbox_list.py).

Messages (on SELECT, NOOP, IDLE news): new upstream UIDs get local UIDs in upstream
order with their FLAGS, INTERNALDATE and RFC822.SIZE, and their ENVELOPE and
BODYSTRUCTURE are cached as they come (the first thing a client asks of a message
list, and what the background would fetch next anyway: in the same FETCH it costs no
round trip and no second pass over the list); with QRESYNC the EXAMINE itself
brings the flag changes and expunges since the last HIGHESTMODSEQ (RFC 7162 §3.2.5);
with CONDSTORE only flags that changed since then are fetched, and expunges are found
with one UID SEARCH instead of a full flag listing. Each sync is one LMDB transaction.

A message the upstream expunged (or that an UIDVALIDITY change could not re-match)
may only have moved: its cached body is held a while for a twin (sync/twins.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from twisted.internet import defer

from imapproxy.message.structure_wire import upstream_structure_bytes
from imapproxy.notify import MailboxChange
from imapproxy.protocol import FetchAttribute, SequenceSet, Value
from imapproxy.store import Store, Tx, cache, mailboxes, messages
from imapproxy.store.cache import Kind
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.sync.progress import Progress
from imapproxy.sync.qresync import note_forgetful, qresync_parameter
from imapproxy.sync.twins import gmail_blob, hold_orphan, note_gmail_id, release_expired
from imapproxy.types import UID, BlobId, MailboxId, UpstreamUID
from imapproxy.upstream.client import SelectInfo, UpstreamClient, as_int, text
from imapproxy.upstream.errors import UpstreamRefused
from imapproxy.upstream.vanished import uids_within

NEW_MESSAGE_ITEMS = (
    FetchAttribute("FLAGS"),
    FetchAttribute("INTERNALDATE"),
    FetchAttribute("RFC822.SIZE"),
    FetchAttribute("ENVELOPE"),
    FetchAttribute("BODYSTRUCTURE"),
)
#: Items of a new message's FETCH kept in the cache under its blob.
_STRUCTURE_ITEMS = (("ENVELOPE", Kind.ENVELOPE), ("BODYSTRUCTURE", Kind.BODYSTRUCTURE))
FLAG_ITEMS = (FetchAttribute("FLAGS"),)
#: Gmail's identity of a message across its folders (X-GM-EXT-1; sync/twins.py).
GMAIL_ID = FetchAttribute("X-GM-MSGID")


def new_message_items(client: UpstreamClient) -> tuple[FetchAttribute, ...]:
    """What a new message is fetched with: X-GM-MSGID too where the upstream has it."""
    return NEW_MESSAGE_ITEMS + ((GMAIL_ID,) if client.has("X-GM-EXT-1") else ())


#: A first sync of a larger mailbox stores its message list this many messages at a
#: time, as they arrive, so memory stays flat in the mailbox's size.
FIRST_SYNC_BATCH = 2500
#: ... and asks for it in FETCH commands of up to this many messages: each command must
#: finish within the FETCH timeout (600 s), which this many take at 25 kB/s.
FIRST_SYNC_COMMAND = 20_000
#: A mailbox the replica never had: the UID FETCH of its messages at UIDs up to this
#: (so at most this many) goes in the same write as its EXAMINE, one round trip for
#: both; a small folder's whole first sync. Larger ones fetch the rest after it.
PIPELINED_FIRST_UIDS = 1000
#: The other never-seen mailboxes examined in that same write (sync_new_mailboxes),
#: at most this many, each with its messages at UIDs up to NEW_FOLDER_UIDS: what one
#: write brings stays a few MB however many folders an account has.
NEW_FOLDERS_AT_ONCE = 15
NEW_FOLDER_UIDS = 200


@dataclass(frozen=True)
class FirstLook:
    """A never-seen mailbox's EXAMINE answer with its messages at UIDs 1..upto, taken
    with other mailboxes' but with more messages than came: its own first sync uses
    them if the mailbox did not change since (same UIDNEXT, count and HIGHESTMODSEQ)."""

    info: SelectInfo
    upto: int
    #: When the look was asked, by the account's clock (0: not known). A sync that goes
    #: on from info has the mailbox as it was then, not at its own start.
    asked_at: float = 0.0


def flags_of(value: Value) -> tuple[str, ...]:
    """Upstream flags as we keep them: \\Recent is per-session and never replicated."""
    assert isinstance(value, tuple)
    return _read_flags(value)[0]


def _recent_upstream(item: dict[str, Value]) -> bool:
    flags = item.get("FLAGS", ())
    return isinstance(flags, tuple) and _read_flags(flags)[1]


def _read_flags(value: tuple[Value, ...]) -> tuple[tuple[str, ...], bool]:
    """(the flags kept, whether \\Recent is among them) of one FLAGS value."""
    try:
        return _read_flags_once(value)
    except TypeError:  # a value that cannot be a cache key (no server sends one)
        return _flags_read(value)


@lru_cache(maxsize=4096)
def _read_flags_once(value: tuple[Value, ...]) -> tuple[tuple[str, ...], bool]:
    """_flags_read once per distinct list: a first sync meets the same few lists on
    every message (read per message, and twice for \\Recent: about 7% of its CPU)."""
    return _flags_read(value)


def _flags_read(value: tuple[Value, ...]) -> tuple[tuple[str, ...], bool]:
    names = [text(v) for v in value]
    kept = tuple(f for f in names if f.upper() != "\\RECENT")
    return kept, len(kept) < len(names)


@dataclass
class _Fetched:
    info: SelectInfo
    new: list[dict[str, Value]] = field(default_factory=list)
    flags: list[dict[str, Value]] = field(default_factory=list)
    full_flags: bool = False
    present: set[int] | None = None
    #: flags/present describe upstream UIDs 1..examined only (ours above it came from
    #: our own APPEND/COPY and are reported in `new`).
    examined: int = 0
    #: With QRESYNC: the known UIDs VANISHED (EARLIER) named (expunged upstream).
    vanished: set[int] | None = None
    #: Upstream messages at or below `examined` that the replica lacks (expunged here,
    #: e.g. by a replayed EXPUNGE the upstream did not carry out): they come back.
    missing: list[dict[str, Value]] = field(default_factory=list)
    #: The replica's HIGHESTMODSEQ when the sync began: a message changed locally since
    #: (a client's STORE while we fetched) keeps its flags; the outbox replays them.
    local_modseq: int = 0
    #: What a read-write SELECT on this connection said of new keywords (None: unknown).
    keywords_allowed: bool | None = None
    #: Part of the replica's first sync of this mailbox (see _apply's \Recent rule).
    first_sync: bool = False
    #: A message the upstream calls \Recent was met in an earlier batch of this sync.
    recent_found: bool = False


async def sync_new_mailboxes(
    client: UpstreamClient,
    store: Store,
    mailboxes: list[Mailbox],
    changed_after: int | None = None,
) -> tuple[list[tuple[Mailbox, MailboxChange]], dict[MailboxId, FirstLook]]:
    """First syncs of mailboxes the replica never had, in one round trip: each EXAMINE
    with the UID FETCH of its message list behind it, all in one write (the first
    mailbox's and INBOX's up to PIPELINED_FIRST_UIDS, the others' up to
    NEW_FOLDER_UIDS: INBOX is the folder every client opens). A client
    that opens one folder of a new account is about to open the others: a cold
    session's STATUS of each folder cost one round trip per folder.

    INBOX is examined last: the connection stays on the last mailbox examined, so the
    rest of INBOX's list (the folder clients open first, and often the largest) goes
    on from there without a second EXAMINE (UpstreamClient.still_selected).

    Returns the mailboxes synced whole, and the looks at those whose message list did
    not all come (their own sync goes on from there, see FirstLook). Raises
    UpstreamRefused when the first EXAMINE sent is refused. ``changed_after``: as
    sync_messages's, for the first mailbox."""
    asked = mailboxes[0]
    order = sorted(mailboxes, key=lambda m: m.name == "INBOX")
    firsts = [
        PIPELINED_FIRST_UIDS if m is asked or m.name == "INBOX" else NEW_FOLDER_UIDS for m in order
    ]
    infos = await client.examine_new(
        [m.name for m in order],
        [SequenceSet(((1, upto),)) for upto in firsts],
        new_message_items(client),
    )
    whole: list[tuple[Mailbox, _Fetched]] = []
    looks: dict[MailboxId, FirstLook] = {}
    for mailbox, info, upto in zip(order, infos, firsts, strict=True):
        if isinstance(info, UpstreamRefused) or info.first is None:
            continue  # gone meanwhile, or its FETCH refused: its own sync tells
        if len(info.first) < info.exists:
            looks[mailbox.id] = FirstLook(info, upto)
            continue
        guard = (
            changed_after
            if mailbox is asked and changed_after is not None
            else mailbox.highestmodseq
        )
        fetched = _Fetched(info, new=list(info.first), local_modseq=guard)
        fetched.first_sync = True
        whole.append((mailbox, fetched))
    # One transaction for them all: one disk sync, not one a folder.
    synced = store.write(lambda tx: [_apply(tx, m, f, False) for m, f in whole]) if whole else []
    return synced, looks


def _store_whole(
    store: Store, mailbox: Mailbox, fetched: _Fetched
) -> tuple[Mailbox, MailboxChange]:
    return store.write(lambda tx: _apply(tx, mailbox, fetched, False))


def _usable_look(look: FirstLook | None, info: SelectInfo) -> bool:
    """Whether the messages of an earlier look are still the mailbox's first ones, with
    their flags: nothing arrived, went or changed since (a modseq says so; without
    one, a flag change would not show)."""
    if look is None or look.info.first is None or info.highestmodseq is None:
        return False
    before = look.info
    return (before.uidvalidity, before.uidnext, before.exists, before.highestmodseq) == (
        info.uidvalidity,
        info.uidnext,
        info.exists,
        info.highestmodseq,
    )


async def sync_messages(
    client: UpstreamClient,
    store: Store,
    mailbox: Mailbox,
    changed_after: int | None = None,
    look: FirstLook | None = None,
) -> tuple[Mailbox, MailboxChange]:
    """Bring one replica mailbox up to date with the upstream; returns what changed.

    ``changed_after``: the replica's HIGHESTMODSEQ when the caller last made sure no
    queued change touched the mailbox. A message changed locally after it (a client's
    STORE while this sync waited for the link) keeps its flags: its change is queued
    and not upstream yet, so the upstream's flags are older than ours.

    The best the upstream offers (its CAPABILITY) decides the cost, never the result:
    QRESYNC: one EXAMINE with the QRESYNC parameter brings every flag change and
    expunge since the last sync (VANISHED (EARLIER)); CONDSTORE: flags CHANGEDSINCE the
    last HIGHESTMODSEQ, and one UID SEARCH for expunges when the count says some went;
    neither: every message's FLAGS, and what is not listed is gone. New messages come
    with one UID FETCH above the highest UID known, each way.

    ``look``: this mailbox's answers from sync_new_mailboxes, used in place of the
    message list's first part if the mailbox did not change since."""
    known = _known(store, mailbox) if mailbox.upstream_last_uid else []
    never_seen = mailbox.never_synced
    look = look if never_seen else None
    upto = PIPELINED_FIRST_UIDS if look is None else look.upto
    first = (
        (SequenceSet(((1, upto),)), new_message_items(client))
        if never_seen and look is None
        else None
    )
    if look is not None and client.still_selected(look.info):
        # The look's EXAMINE is still this connection's selection, with nothing run
        # since: its answer is the state a second EXAMINE would find, a round trip
        # sooner (a cold session's 10,000-message INBOX, at 50 ms, went on 0.06 s later).
        info = look.info
    else:
        info = await client.select(
            mailbox.name,
            readonly=True,
            qresync=qresync_parameter(client, mailbox, known),
            first=first,
        )
        if look is not None and _usable_look(look, info):
            info = replace(info, first=look.info.first)
    # (A look that no longer holds: info.first stays None, the list is fetched whole.)
    reset = (
        mailbox.upstream_uidvalidity is not None
        and mailbox.upstream_uidvalidity != info.uidvalidity
    )
    last_uid = 0 if reset else mailbox.upstream_last_uid
    batched = not reset and last_uid == 0 and info.exists > FIRST_SYNC_BATCH
    if batched:
        mailbox = await _first_sync_in_batches(client, store, mailbox, info, info.first or ())
        last_uid = mailbox.upstream_last_uid
        known = _known(store, mailbox)
    examined = [] if reset else [up for up in known if up <= last_uid]
    guard = mailbox.highestmodseq if changed_after is None else changed_after
    fetched = _Fetched(info, examined=last_uid, local_modseq=guard)
    fetched.keywords_allowed = client.keywords_allowed.get(mailbox.name)
    fetched.first_sync = mailbox.upstream_uidvalidity is None

    uidnext_moved = info.uidnext is None or info.uidnext > (mailbox.upstream_uidnext or 0)
    if batched and info.uidnext is not None and len(known) == info.exists:
        # The batches, by message number, fetched every message the EXAMINE counted (no
        # EXPUNGE renumbers them during FETCH, RFC 3501 §7.4.1): nothing below its
        # UIDNEXT is left, and what came since is above it, for the next sync.
        uidnext_moved = False
    if info.exists and info.first is not None and not reset and last_uid == 0:
        fetched.new = list(info.first)
        if len(fetched.new) < info.exists:  # more, above the pipelined UIDs
            fetched.new += await _fetch_above(client, upto)
    elif info.exists and (reset or last_uid == 0 or uidnext_moved):
        fetched.new = await _fetch_above(client, last_uid)
    if last_uid:
        old = SequenceSet(((1, last_uid),))
        condstore = info.highestmodseq is not None and mailbox.upstream_highestmodseq is not None
        if info.qresync:
            # Everything changed or expunged since the last sync came with the EXAMINE.
            fetched.flags = [item for item in info.changed if as_int(item["UID"]) <= last_uid]
            fetched.vanished = uids_within(info.vanished, examined)
            note_forgetful(client, info, last_uid, len(fetched.vanished))
            left = len(examined) - len(fetched.vanished) + len(fetched.new)
            if info.exists != left:
                # The replica and the upstream disagree beyond what VANISHED explains
                # (a message the replica lacks, e.g. a local expunge the upstream did
                # not carry out): find out which UIDs are there, as CONDSTORE does.
                fetched.present = await client.search_uids(old)
        elif not condstore:
            fetched.flags = await client.fetch(old, FLAG_ITEMS)
            fetched.full_flags = True
        else:
            if info.highestmodseq != mailbox.upstream_highestmodseq:
                fetched.flags = await client.fetch(
                    old, FLAG_ITEMS, changedsince=mailbox.upstream_highestmodseq
                )
            if info.exists != len(examined) + len(fetched.new):
                fetched.present = await client.search_uids(old)
        await _fetch_missing(client, store, mailbox, fetched)
    synced, change = store.write(lambda tx: _apply(tx, mailbox, fetched, reset))
    return synced, replace(change, added=True) if batched else change


async def _fetch_above(client: UpstreamClient, last_uid: int) -> list[dict[str, Value]]:
    """The new-message items of every message above last_uid."""
    new = await client.fetch(SequenceSet(((last_uid + 1, None),)), new_message_items(client))
    # "n:*" also matches the highest UID when it is below n: filter it out.
    return [item for item in new if as_int(item["UID"]) > last_uid]


def _known(store: Store, mailbox: Mailbox) -> list[int]:
    """The upstream UIDs the replica holds in mailbox, ascending."""
    return store.read(lambda tx: messages.upstream_uids(tx, mailbox.account, mailbox.id))


async def _first_sync_in_batches(
    client: UpstreamClient,
    store: Store,
    mailbox: Mailbox,
    info: SelectInfo,
    prefetched: tuple[dict[str, Value], ...] = (),
) -> Mailbox:
    """The message list of a mailbox the replica never had, streamed: FETCH by message
    number, each response taken as it arrives and the messages stored FIRST_SYNC_BATCH
    at a time, each batch in its own transaction. The upstream goes on sending while a
    batch is stored (the kernel holds what we have not read yet), so no batch waits a
    round trip, and what is held stays one batch however large the mailbox. (Batches of
    FETCH commands, each asked for when the one before had come, cost a round trip and
    the upstream's work on each: 0.73 s of a 10,000-message INBOX's sync at 50 ms.)

    Afterwards the replica reads as synced up to the last UID stored; the caller's
    usual resync covers what arrived or went meanwhile. ``prefetched``: the lowest UIDs'
    items, fetched with the EXAMINE; they are the first messages by number."""
    recent_found = False
    # No UIDNEXT recorded until the caller's own pass: were we stopped between batches,
    # the next sync must still fetch everything above the last UID stored.
    partial = replace(info, uidnext=None)
    progress = Progress(f"first sync of {mailbox.name!r}", info.exists)
    pending: list[dict[str, Value]] = list(prefetched)
    failed: list[Exception] = []

    def store_pending() -> None:
        nonlocal mailbox, recent_found
        batch = _Fetched(partial, new=pending[:], local_modseq=mailbox.highestmodseq)
        pending.clear()
        batch.first_sync, batch.recent_found = True, recent_found
        recent_found = recent_found or any(_recent_upstream(item) for item in batch.new)
        mailbox = _store_batch(store, mailbox, batch)
        progress.advance(len(batch.new))

    def store_or_fail_later() -> None:
        """Store what is held; a failure fails the sync once the FETCH is answered (the
        link is left with no command half read), and nothing more is stored."""
        try:
            store_pending()
        except Exception as exc:
            failed.append(exc)

    def take(item: dict[str, Value]) -> None:
        if failed:
            return
        pending.append(item)
        if len(pending) >= FIRST_SYNC_BATCH:
            store_or_fail_later()

    try:
        for first in range(len(prefetched) + 1, info.exists + 1, FIRST_SYNC_COMMAND):
            last = min(first + FIRST_SYNC_COMMAND - 1, info.exists)
            numbers = SequenceSet(((first, last),))
            fetching = defer.ensureDeferred(
                client.fetch_each(numbers, new_message_items(client), take, by_sequence=True)
            )
            if pending and not failed:
                # Stored while the FETCH is on its way (the look's messages, at first):
                # a round trip in which the CPU, the bound of a first sync, would wait.
                # (It is: the upstream connection hands a command to the kernel at once.)
                store_or_fail_later()
            await fetching
            if failed:
                raise failed[0]
    finally:
        if pending and not failed:
            store_pending()  # what came before the link went is kept: less to fetch again
    progress.finish()
    return mailbox


def _store_batch(store: Store, mailbox: Mailbox, batch: _Fetched) -> Mailbox:
    return _store_whole(store, mailbox, batch)[0]


async def _fetch_missing(
    client: UpstreamClient, store: Store, mailbox: Mailbox, fetched: _Fetched
) -> None:
    """Upstream messages at any UID the replica has no record of (RFC 4549 §4.3 asks
    for "anything not returned is expunged"; the converse matters as much)."""
    if fetched.full_flags:
        upstream = {as_int(item["UID"]) for item in fetched.flags}
    elif fetched.present is not None:
        upstream = set(fetched.present)
    else:
        return
    known = store.read(lambda tx: messages.upstream_map(tx, mailbox.account, mailbox.id))
    lacking = sorted(uid for uid in upstream if uid not in known and uid <= fetched.examined)
    if lacking:
        fetched.missing = await client.fetch(
            SequenceSet.from_ints(lacking), new_message_items(client)
        )


def _apply(
    tx: Tx, synced: Mailbox, fetched: _Fetched, reset: bool
) -> tuple[Mailbox, MailboxChange]:
    mailbox = mailboxes.get(tx, synced.account, synced.id)
    if mailbox is None:
        # Deleted here while its sync was in flight (a client's DELETE): nothing to
        # apply, and nothing wrong with the upstream's answer.
        return synced, MailboxChange(synced.id)
    account = mailbox.account
    # A client changed the replica since the caller found the queue clear: a message it
    # lacks may be one that client expunged, its EXPUNGE still queued. Not brought back
    # now; the next sync, after the replay, decides.
    changed_here = mailbox.highestmodseq > fetched.local_modseq
    release_expired(tx, account)
    expunged: list[UID] = []
    changed: list[UID] = []
    if reset:
        mailbox, expunged, changed = _rematch(tx, mailbox, fetched)
    upmap = _upstream_map(tx, mailbox, fetched, reset)

    for item in fetched.flags:
        uid = upmap.get(as_int(item["UID"]))
        if uid is not None:
            mailbox = _set_flags(
                tx, mailbox, uid, flags_of(item.get("FLAGS", ())), changed, fetched.local_modseq
            )

    gone: Iterable[int] = ()
    examined = {up for up in upmap if up <= fetched.examined}
    if fetched.full_flags:
        gone = examined - {as_int(item["UID"]) for item in fetched.flags}
    elif fetched.present is not None:
        gone = examined - fetched.present
    elif fetched.vanished is not None:
        gone = examined & fetched.vanished
    for up_uid in sorted(gone):
        gone_message = messages.get(tx, account, mailbox.id, upmap[up_uid])
        if gone_message is not None:
            messages.remove(tx, account, mailbox.id, gone_message)
            hold_orphan(tx, account, gone_message.blob)
            mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
            mailboxes.log_change(tx, mailbox, modseq, {"uid": gone_message.uid, "what": "expunge"})
            expunged.append(gone_message.uid)

    last_uid = mailbox.upstream_last_uid
    adding: list[dict[str, Value]] = []
    for item in sorted(fetched.new, key=lambda i: as_int(i["UID"])):
        up_uid = as_int(item["UID"])
        if up_uid not in upmap and "RFC822.SIZE" not in item:
            # A flag change made elsewhere meanwhile, unsolicited (with its UID once
            # QRESYNC is enabled, RFC 7162 §3.2.10): no message of the list. Taken for
            # one, it would move the last UID synced past messages not fetched yet.
            continue
        last_uid = max(last_uid, up_uid)
        if up_uid in upmap:
            # Ours already (our own APPEND/COPY linked it): now part of the synced range.
            mailbox = _set_flags(
                tx, mailbox, upmap[up_uid], flags_of(item.get("FLAGS", ())), changed
            )
            _note_gmail_id(tx, mailbox, upmap[up_uid], item)
            continue
        adding.append(item)
    mailbox, upstream_recent = _add_upstream(tx, mailbox, adding)
    if fetched.first_sync and not fetched.recent_found:
        # Everything is new to the replica the first time: only what the upstream still
        # calls \Recent (no session there has seen it) is recent for our sessions. (In
        # batches: the first batch that meets such a message sets it; later ones keep it.)
        first = mailbox.uidnext if upstream_recent is None else upstream_recent
        mailbox = mailbox.with_(first_recent_uid=max(mailbox.first_recent_uid, first))

    if not changed_here:
        back = [item for item in fetched.missing if as_int(item["UID"]) not in upmap]
        mailbox, _ = _add_upstream(tx, mailbox, back)

    info = fetched.info
    if fetched.keywords_allowed is not None:
        mailbox = mailbox.with_(new_keywords=fetched.keywords_allowed)
    mailbox = mailbox.with_(
        upstream_uidvalidity=info.uidvalidity,
        upstream_uidnext=info.uidnext,
        upstream_highestmodseq=info.highestmodseq,
        upstream_last_uid=max(last_uid, mailbox.upstream_last_uid),
    )
    mailboxes.put(tx, mailbox)
    change = MailboxChange(
        mailbox.id,
        added=bool(fetched.new or fetched.missing),
        expunged=tuple(expunged),
        flags=tuple(changed),
    )
    return mailbox, change


def _upstream_map(tx: Tx, mailbox: Mailbox, fetched: _Fetched, reset: bool) -> dict[int, UID]:
    """Upstream UID -> local UID for what this sync needs to look up. A sync that only
    adds messages (a first sync's batches) needs only its new UIDs looked up; the whole
    map, read once per batch, made a 100,000-message first sync quadratic."""
    only_adds = not (
        reset
        or fetched.flags
        or fetched.full_flags
        or fetched.present is not None
        or fetched.vanished is not None
        or fetched.missing
    )
    if not only_adds:
        return messages.upstream_map(tx, mailbox.account, mailbox.id)
    if not fetched.new:
        return {}
    # One range read, not a look-up per UID: the new UIDs are one stretch (the next
    # part of a message list, or what came above the last UID synced), and the replica
    # knows few of them if any (ours, linked after an APPEND or COPY).
    uids = [as_int(item["UID"]) for item in fetched.new]
    return messages.upstream_map_between(tx, mailbox.account, mailbox.id, min(uids), max(uids))


def _add_upstream(
    tx: Tx, mailbox: Mailbox, items: list[dict[str, Value]]
) -> tuple[Mailbox, UID | None]:
    """Messages the upstream listed, new to the replica, at the end of the local UID
    space in the order given (upstream order), each with a new modseq; returns the
    mailbox and the local UID of the first one the upstream calls \\Recent.

    A message with an X-GM-MSGID the replica has met (the same Gmail message in
    another folder) shares that blob. A first sync adds every message here, so the
    mailbox record is built once and the blob counter moved once, not per message."""
    account, mailbox_id = mailbox.account, mailbox.id
    uid, modseq = mailbox.uidnext, mailbox.highestmodseq
    fresh = cache.new_blobs(tx, account, len(items))
    put_message = messages.putter(tx, account, mailbox_id)
    recent: UID | None = None
    structures: list[tuple[BlobId, Kind, bytes]] = []
    for item in items:
        msgid = item.get("X-GM-MSGID")
        gmail_id = as_int(msgid) if msgid is not None else None
        shared = None if gmail_id is None else gmail_blob(tx, account, gmail_id)
        blob = next(fresh) if shared is None else shared
        modseq += 1
        flag_list = item.get("FLAGS", ())
        assert isinstance(flag_list, tuple)
        flags, upstream_recent = _read_flags(flag_list)
        message = Message(
            UID(uid),
            UpstreamUID(as_int(item["UID"])),
            flags,
            text(item.get("INTERNALDATE")),
            as_int(item.get("RFC822.SIZE")),
            modseq,
            blob,
        )
        put_message(message)
        if gmail_id is not None:
            note_gmail_id(tx, account, blob, gmail_id)
        for name, kind in _STRUCTURE_ITEMS:
            value = item.get(name)
            # NIL: expunged upstream while listed; nothing is kept, as for any fetch.
            if value is not None and (shared is None or not cache.has(tx, account, blob, kind)):
                structures.append((blob, kind, upstream_structure_bytes(name, value)))
        if recent is None and upstream_recent:
            recent = UID(uid)
        uid += 1
    # After the message records, not between them: LMDB places the pages a transaction
    # writes in the order it writes them, and a later scan of the message records
    # (STATUS counts) maps the pages around each one it reads (the kernel's
    # fault-around): with every record beside ENVELOPEs, a scan of a 100,000-message
    # mailbox mapped the whole 86 MB file.
    keep = {kind: cache.putter(tx, account, kind) for _, kind in _STRUCTURE_ITEMS}
    for blob, kind, data in structures:
        keep[kind](blob, data)
    if items:
        mailbox = mailbox.with_(uidnext=uid, highestmodseq=modseq)
    return mailbox, recent


def _note_gmail_id(tx: Tx, mailbox: Mailbox, uid: UID, item: dict[str, Value]) -> None:
    """A message of ours (our APPEND or COPY, now linked) seen with its X-GM-MSGID: its
    other folders' appearances (All Mail) share its blob."""
    msgid = item.get("X-GM-MSGID")
    message = messages.get(tx, mailbox.account, mailbox.id, uid)
    if msgid is not None and message is not None:
        note_gmail_id(tx, mailbox.account, message.blob, as_int(msgid))


def _set_flags(
    tx: Tx,
    mailbox: Mailbox,
    uid: UID,
    flags: tuple[str, ...],
    changed: list[UID],
    local_modseq: int | None = None,
) -> Mailbox:
    """Take the upstream's flags for one message; a real change gets a new modseq.
    A message changed locally after local_modseq keeps its flags (see _Fetched)."""
    message = messages.get(tx, mailbox.account, mailbox.id, uid)
    if message is None or set(message.flags) == set(flags):
        return mailbox
    if local_modseq is not None and message.modseq > local_modseq:
        return mailbox
    mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
    messages.put(tx, mailbox.account, mailbox.id, message.with_(flags=flags, modseq=modseq))
    mailboxes.log_change(tx, mailbox, modseq, {"uid": uid, "what": "flags"})
    changed.append(uid)
    return mailbox


def _rematch(tx: Tx, mailbox: Mailbox, fetched: _Fetched) -> tuple[Mailbox, list[UID], list[UID]]:
    """The upstream's UIDVALIDITY changed: its old UIDs mean nothing now.

    Rather than pass the reset on to every client (a full re-download), re-link our
    messages to the new upstream UIDs where INTERNALDATE and size identify exactly
    one old and one new message; those keep their local UID, flags follow the
    upstream, content stays cached. The rest are expunged and re-added as new.
    Ambiguous pairs are never guessed (RFC 4549 §4.2.1 spirit).
    """
    account = mailbox.account
    tx.delete_prefix(b"upstream_uids", messages.prefix(account, mailbox.id))
    old = list(messages.iterate(tx, account, mailbox.id))
    olds: dict[tuple[str, int], list[Message]] = defaultdict(list)
    for message in old:
        olds[(message.internaldate, message.size)].append(message)
    news: dict[tuple[str, int], list[dict[str, Value]]] = defaultdict(list)
    for item in fetched.new:
        news[(text(item.get("INTERNALDATE")), as_int(item.get("RFC822.SIZE")))].append(item)
    kept: set[UID] = set()
    changed: list[UID] = []
    remaining = []
    for key, items in news.items():
        candidates = olds.get(key, [])
        if len(items) == 1 and len(candidates) == 1:
            message, item = candidates[0], items[0]
            flags = flags_of(item.get("FLAGS", ()))
            mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
            relinked = message.with_(
                upstream_uid=UpstreamUID(as_int(item["UID"])), flags=flags, modseq=modseq
            )
            messages.put(tx, account, mailbox.id, relinked)
            kept.add(message.uid)
            if set(flags) != set(message.flags):
                changed.append(message.uid)
        else:
            remaining.extend(items)
    fetched.new = remaining
    expunged = []
    for message in old:
        if message.uid not in kept:
            messages.remove(tx, account, mailbox.id, message.with_(upstream_uid=None))
            hold_orphan(tx, account, message.blob)
            mailbox, modseq = mailboxes.next_modseq(tx, mailbox)
            mailboxes.log_change(tx, mailbox, modseq, {"uid": message.uid, "what": "expunge"})
            expunged.append(message.uid)
    highest = max((as_int(item["UID"]) for items in news.values() for item in items), default=0)
    return mailbox.with_(upstream_last_uid=highest), expunged, changed
