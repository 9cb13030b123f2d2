"""SEARCH: flag, size, date and UID keys are evaluated on the replica; text keys
(headers, body) are asked of the upstream with our UIDs translated, so the matching
rules (charset, MIME decoding) are exactly the upstream's. When the upstream cannot
be reached, text keys are evaluated on cached headers and bodies (search_text.py),
and the answer says how many messages could not be searched."""

from __future__ import annotations

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
from imapproxy.upstream.errors import UpstreamUnavailable

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


async def _upstream_search(
    session: Session, cmd: p.Search, messages_by_uid: dict[UID, Message]
) -> set[int]:
    view = session.selected
    upstream_of: dict[int, int] = {
        uid: m.upstream_uid for uid, m in messages_by_uid.items() if m.upstream_uid is not None
    }
    local_of: dict[int, int] = {up: uid for uid, up in upstream_of.items()}
    criteria = _translate(cmd.criteria, view, upstream_of, messages_by_uid)

    async def run(client: UpstreamClient) -> set[int]:
        await client.ensure_selected(view.mailbox.name)
        return await client.search(criteria, cmd.charset)

    found = await session.account.link.use(run)
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


@handles(p.Search, SELECTED)
async def search(session: Session, cmd: p.Search) -> list[bytes]:
    if cmd.charset is not None and cmd.charset.upper() not in ("US-ASCII", "UTF-8"):
        raise CommandFailed(
            "charset not supported",
            response_code=replies.code("BADCHARSET", (p.Atom("UTF-8"), p.Atom("US-ASCII"))),
        )
    view = session.selected
    mailbox = view.mailbox
    uses_modseq = _uses(cmd.criteria, {"MODSEQ"})
    if uses_modseq:
        session.send(condstore.enable_condstore(session.modes, view))
    found = session.account.store.read(
        lambda tx: messages.get_many(tx, mailbox.account, mailbox.id, list(view.uids))
    )
    by_uid = {m.uid: m for m in found}
    seq_of: dict[int, int] = {uid: i for i, uid in enumerate(view.uids, 1)}
    completed = "SEARCH completed"
    found_by_seq = {seq_of[m.uid]: m for m in found}
    if _uses_text(cmd.criteria):
        try:
            matched = await _upstream_search(session, cmd, by_uid)
        except UpstreamUnavailable:
            matched, unsearched = _cached_search(session, cmd, found, seq_of)
            completed = "SEARCH completed from the replica (upstream unreachable)"
            if unsearched:
                completed += f"; {unsearched} message(s) not searched: their content is not cached"
        hits = sorted(seq_of[uid] if not cmd.uid else uid for uid in matched if uid in seq_of)
    else:
        local = _Local(view, datetime.now(UTC))
        hits = [
            (m.uid if cmd.uid else seq_of[m.uid])
            for m in found
            if local.matches(cmd.criteria, m, seq_of[m.uid])
        ]
        hits.sort()
    modseq = None
    if uses_modseq:
        # The highest modseq of the messages found (RFC 7162 §3.1.6).
        hit_messages = [by_uid[UID(n)] if cmd.uid else found_by_seq[n] for n in hits]
        modseq = max((m.modseq for m in hit_messages), default=None)
    if cmd.return_options is not None:
        session.send(_esearch(cmd, hits, modseq))
    elif modseq is not None:
        session.send(replies.untagged("SEARCH", *hits, (p.Atom("MODSEQ"), modseq)))
    else:
        session.send(replies.untagged("SEARCH", *hits))
    return ok(session, cmd.tag, completed, allow_expunge=False)


def _cached_search(
    session: Session, cmd: p.Search, found: list[Message], seq_of: dict[int, int]
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
                if local.matches(cmd.criteria, message, seq_of[message.uid]):
                    matched.add(message.uid)
            except search_text.Unsearchable:
                unsearched += 1
        local.text = None
        return matched, unsearched

    return session.account.store.read(scan)
