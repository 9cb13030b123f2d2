"""SEARCH: flag, size, date and UID keys are evaluated on the replica; text keys
(headers, body) are asked of the upstream with our UIDs translated, so the matching
rules (charset, MIME decoding) are exactly the upstream's. When the upstream cannot
be reached, text keys are evaluated on cached headers and bodies (search_text.py),
and the answer says how many messages could not be searched."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from imapproxy import protocol as p
from imapproxy.server import condstore, replies
from imapproxy.server.handlers import search_text
from imapproxy.server.handlers.general import ok
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import SELECTED, Session, handles
from imapproxy.server.view import SelectedView, contains, intervals
from imapproxy.store import Tx, messages
from imapproxy.store.messages import Message
from imapproxy.types import UID
from imapproxy.upstream.client import UpstreamClient
from imapproxy.upstream.errors import UpstreamBusy, UpstreamUnavailable

TEXT_KEYS = {
    "FROM",
    "TO",
    "CC",
    "BCC",
    "SUBJECT",
    "BODY",
    "TEXT",
    "HEADER",
    "SENTBEFORE",
    "SENTON",
    "SENTSINCE",
}
FLAG_KEYS = {
    "ANSWERED": ("\\ANSWERED", True),
    "DELETED": ("\\DELETED", True),
    "DRAFT": ("\\DRAFT", True),
    "FLAGGED": ("\\FLAGGED", True),
    "SEEN": ("\\SEEN", True),
    "UNANSWERED": ("\\ANSWERED", False),
    "UNDELETED": ("\\DELETED", False),
    "UNDRAFT": ("\\DRAFT", False),
    "UNFLAGGED": ("\\FLAGGED", False),
    "UNSEEN": ("\\SEEN", False),
}


def _uses_text(key: p.SearchKey) -> bool:
    return _uses(key, TEXT_KEYS)


def _uses(key: p.SearchKey, names: set[str]) -> bool:
    if key.name in names:
        return True
    return any(_uses(arg, names) for arg in key.args if isinstance(arg, p.SearchKey))


def _internal_date(message: Message) -> date:
    return p.parse_datetime(message.internaldate).date()


class _Local:
    """Evaluates a key tree against one message of the view."""

    def __init__(self, view: SelectedView, now: datetime) -> None:
        self.view = view
        self.now = now
        #: Set while evaluating text keys on cached content (offline).
        self.text: search_text.CachedText | None = None
        self.highest_uid = view.uids[-1] if view.uids else 0
        self.count = len(view.uids)
        self._sets: dict[int, list[tuple[int, int]]] = {}

    def _spans(self, key: p.SearchKey, largest: int) -> list[tuple[int, int]]:
        """The key's set as merged ranges, once per key: membership is then a bisection,
        so ``UID 1:4294967295`` costs nothing like the highest UID."""
        cached = self._sets.get(id(key))
        if cached is None:
            cached = self._sets[id(key)] = intervals(key.args[0], largest)
        return cached

    def matches(self, key: p.SearchKey, message: Message, seq: int) -> bool:
        name = key.name
        if name == "AND":
            return all(self.matches(k, message, seq) for k in key.args)
        if name == "OR":
            return self.matches(key.args[0], message, seq) or self.matches(
                key.args[1], message, seq
            )
        if name == "NOT":
            return not self.matches(key.args[0], message, seq)
        if name == "ALL":
            return True
        recent = message.uid in self.view.recent
        if name in ("OLD", "RECENT"):
            return recent == (name == "RECENT")
        flags = {f.upper() for f in message.flags}
        if name == "NEW":
            return recent and "\\SEEN" not in flags
        if name in FLAG_KEYS:
            flag, present = FLAG_KEYS[name]
            return (flag in flags) == present
        if name == "KEYWORD":
            return key.args[0].upper() in flags
        if name == "UNKEYWORD":
            return key.args[0].upper() not in flags
        if name == "MODSEQ":
            # One modseq per message: entry name and type are ignored (RFC 7162 §3.1.5).
            return bool(message.modseq >= key.args[-1])
        if name == "LARGER":
            return message.size > key.args[0]
        if name == "SMALLER":
            return message.size < key.args[0]
        if name in ("UID", "SEQ") and key.args[0].saved:
            return message.uid in self.view.saved
        if name == "UID":
            return contains(self._spans(key, self.highest_uid), message.uid)
        if name == "SEQ":
            return contains(self._spans(key, self.count), seq)
        if name in ("BEFORE", "ON", "SINCE"):
            day = _internal_date(message)
            return {
                "BEFORE": day < key.args[0],
                "ON": day == key.args[0],
                "SINCE": day >= key.args[0],
            }[name]
        if name in ("OLDER", "YOUNGER"):
            age = self.now - p.parse_datetime(message.internaldate)
            limit = timedelta(seconds=key.args[0])
            return age >= limit if name == "OLDER" else age < limit
        if name in TEXT_KEYS and self.text is not None:
            return search_text.matches(key, self.text)
        raise CommandFailed(f"SEARCH {name} is not supported", status="BAD")


def _translate(
    key: p.SearchKey,
    view: SelectedView,
    upstream_of: dict[int, int],
    by_uid: dict[UID, Message],
) -> p.SearchKey:
    """The same criteria in the upstream's UID space (sequence numbers become UID sets,
    keys on our own state — \\Recent, MODSEQ — the UIDs they match here)."""
    if key.name == "MODSEQ":
        wanted = key.args[-1]
        ups = [
            upstream_of[u]
            for u, m in sorted(by_uid.items())
            if m.modseq >= wanted and u in upstream_of
        ]
        if not ups:
            return p.SearchKey("NOT", (p.SearchKey("ALL"),))
        return p.SearchKey("UID", (p.SequenceSet.from_ints(ups),))
    if key.name in ("SEQ", "UID"):
        pairs = view.resolve(key.args[0], key.name == "UID")
        ups = [upstream_of[uid] for _, uid in pairs if uid in upstream_of]
        # An empty set must match nothing: UID 0 never exists... but 0 is not valid IMAP,
        # so use NOT ALL.
        if not ups:
            return p.SearchKey("NOT", (p.SearchKey("ALL"),))
        return p.SearchKey("UID", (p.SequenceSet.from_ints(ups),))
    if key.name in ("RECENT", "OLD", "NEW"):
        # \Recent is this session's, not the upstream session's: name the messages.
        ups = [upstream_of[uid] for uid in sorted(view.recent) if uid in upstream_of]
        recent = (
            p.SearchKey("UID", (p.SequenceSet.from_ints(ups),))
            if ups
            else p.SearchKey("NOT", (p.SearchKey("ALL"),))
        )
        if key.name == "OLD":
            return p.SearchKey("NOT", (recent,))
        if key.name == "NEW":
            return p.SearchKey("AND", (recent, p.SearchKey("UNSEEN")))
        return recent
    args = tuple(
        _translate(a, view, upstream_of, by_uid) if isinstance(a, p.SearchKey) else a
        for a in key.args
    )
    return p.SearchKey(key.name, args)


#: How long a client waits for the upstream's answer to a text SEARCH before the
#: replica answers instead (a link that stalls mid-search is noticed only after
#: PATIENT_SECONDS of silence, since servers may search that long without a word).
CLIENT_SEARCH_SECONDS = 10.0


async def _upstream_search(
    session: Session,
    criteria_here: p.SearchKey,
    charset: str | None,
    messages_by_uid: dict[UID, Message],
) -> set[int]:
    view = session.selected
    upstream_of: dict[int, int] = {
        uid: m.upstream_uid for uid, m in messages_by_uid.items() if m.upstream_uid is not None
    }
    local_of: dict[int, int] = {up: uid for uid, up in upstream_of.items()}
    criteria = _translate(criteria_here, view, upstream_of, messages_by_uid)

    async def run(client: UpstreamClient) -> set[int]:
        await client.ensure_selected(view.mailbox.name)
        return await client.search(criteria, charset)

    found = await session.account.link.use_within(run, CLIENT_SEARCH_SECONDS)
    return {local_of[up] for up in found if up in local_of}


def _esearch(cmd: p.Search, numbers: list[int], modseq: int | None) -> list[bytes]:
    options = {o.upper() for o in (cmd.return_options or ())} or {"ALL"}
    values: list[Any] = [(p.Atom("TAG"), cmd.tag.encode())]
    if cmd.uid:
        values.append(p.Atom("UID"))
    if numbers:
        if "MIN" in options:
            values += [p.Atom("MIN"), numbers[0]]
        if "MAX" in options:
            values += [p.Atom("MAX"), numbers[-1]]
        if "ALL" in options:
            values += [p.Atom("ALL"), p.Atom(str(p.SequenceSet.from_ints(numbers)))]
    if "COUNT" in options:
        values += [p.Atom("COUNT"), len(numbers)]
    if modseq is not None and numbers:
        values += [p.Atom("MODSEQ"), modseq]  # RFC 7162 §3.1.10
    return replies.untagged("ESEARCH", *values)


def check_charset(charset: str | None) -> None:
    """Any charset Python can decode, as Dovecot takes any iconv knows; an unknown one is
    NO [BADCHARSET] naming the two every server has (RFC 9051 §6.4.4)."""
    try:
        if charset is not None:
            codecs.lookup(charset)
    except LookupError:
        raise CommandFailed(
            "charset not supported",
            response_code=replies.code("BADCHARSET", (p.Atom("UTF-8"), p.Atom("US-ASCII"))),
        ) from None


def _as_utf8(key: p.SearchKey, charset: str | None) -> p.SearchKey:
    """The criteria with its strings in UTF-8, for matching on cached text offline."""
    if charset is None or codecs.lookup(charset).name in ("utf-8", "ascii"):
        return key
    args = tuple(
        _as_utf8(a, charset)
        if isinstance(a, p.SearchKey)
        else (a.decode(charset, "replace").encode() if isinstance(a, bytes) else a)
        for a in key.args
    )
    return p.SearchKey(key.name, args)


async def matching(
    session: Session, criteria: p.SearchKey, charset: str | None
) -> tuple[list[Message], str]:
    """The view's messages matching criteria, in sequence order, and how they were found
    (a completion text saying when the replica answered alone and what it could not read).

    Shared by SEARCH, SORT and THREAD, so all three select the same messages."""
    check_charset(charset)
    view = session.selected
    mailbox = view.mailbox
    found = session.account.store.read(
        lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, list(view.uids))
    )
    seq_of: dict[int, int] = {uid: i for i, uid in enumerate(view.uids, 1)}
    note = ""
    if _uses_text(criteria):
        by_uid = {m.uid: m for m in found}
        try:
            matched = await _upstream_search(session, criteria, charset, by_uid)
        except UpstreamUnavailable as exc:
            here = _as_utf8(criteria, charset)
            matched, unsearched = _cached_search(session, here, found, seq_of)
            why = "upstream slow" if isinstance(exc, UpstreamBusy) else "upstream unreachable"
            note = f" from the replica ({why})"
            if unsearched:
                note += f"; {unsearched} message(s) not searched: their content is not cached"
        return [m for m in found if m.uid in matched], note
    local = _Local(view, datetime.now(UTC))
    return [m for m in found if local.matches(criteria, m, seq_of[m.uid])], note


def save_result(session: Session, options: tuple[str, ...] | None, hits: list[Message]) -> None:
    """RETURN (SAVE) of RFC 5182 §2.4: the messages a later ``$`` names (with MIN/MAX
    alone, only those; with ALL or COUNT, or neither, every match). ``hits`` are in
    answer order: sequence order for SEARCH, sort order for SORT (whose MIN is its first)."""
    if options is None or "SAVE" not in options:
        return
    kept = hits
    if not {"ALL", "COUNT"} & set(options) and {"MIN", "MAX"} & set(options) and hits:
        kept = []
        if "MIN" in options:
            kept.append(hits[0])
        if "MAX" in options:
            kept.append(hits[-1])
    session.selected.saved = frozenset(m.uid for m in kept)


@contextmanager
def saving(session: Session, options: tuple[str, ...] | None) -> Iterator[None]:
    """A SAVE that fails with NO empties ``$``; one refused BAD leaves it (RFC 5182 §2.1)."""
    try:
        yield
    except Exception as exc:
        if options is not None and "SAVE" in options and getattr(exc, "status", "NO") != "BAD":
            session.selected.saved = frozenset()
        raise


@handles(p.Search, SELECTED)
async def search(session: Session, cmd: p.Search) -> list[bytes]:
    view = session.selected
    uses_modseq = _uses(cmd.criteria, {"MODSEQ"})
    if uses_modseq:
        session.send(condstore.enable_condstore(session.modes, view))
    with saving(session, cmd.return_options):
        found, note = await matching(session, cmd.criteria, cmd.charset)
    save_result(session, cmd.return_options, found)
    hits = [int(m.uid) if cmd.uid else int(view.seq(m.uid) or 0) for m in found]
    modseq = None
    if uses_modseq:
        # The highest modseq of the messages found (RFC 7162 §3.1.6).
        modseq = max((m.modseq for m in found), default=None)
    if cmd.return_options is not None:
        if set(cmd.return_options) != {"SAVE"}:  # SAVE alone answers nothing (RFC 5182)
            session.send(_esearch(cmd, hits, modseq))
    elif modseq is not None:
        session.send(replies.untagged("SEARCH", *hits, (p.Atom("MODSEQ"), modseq)))
    else:
        session.send(replies.untagged("SEARCH", *hits))
    return ok(session, cmd.tag, "SEARCH completed" + note, allow_expunge=False)


def _cached_search(
    session: Session, criteria: p.SearchKey, found: list[Message], seq_of: dict[int, int]
) -> tuple[set[int], int]:
    """Text keys on cached content: (matching UIDs, how many could not be searched)."""
    view = session.selected
    local = _Local(view, datetime.now(UTC))
    account = view.mailbox.account

    def scan(tx: Tx) -> tuple[set[int], int]:
        matched: set[int] = set()
        unsearched = 0
        for message in found:
            local.text = search_text.CachedText(tx, account, message)
            try:
                if local.matches(criteria, message, seq_of[message.uid]):
                    matched.add(message.uid)
            except search_text.Unsearchable:
                unsearched += 1
        local.text = None
        return matched, unsearched

    return session.account.store.read(scan)
