"""FETCH: answered from the replica; content the cache lacks is fetched once, first.

Responses put UID first (clients such as Thunderbird and K-9 rely on it). Body
sections come from the cached full message or header when they are there, byte
for byte as the upstream would cut them (imapproxy.message), and otherwise from
the section the upstream returned and we kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice

from twisted.internet import defer

from imapproxy import message as mime
from imapproxy import protocol as p
from imapproxy.metrics import METRICS
from imapproxy.server import condstore, replies
from imapproxy.server.handlers import fetch_lines
from imapproxy.server.handlers.fetch_lines import LineFormat
from imapproxy.server.handlers.general import ok
from imapproxy.server.handlers.messages import flag_change
from imapproxy.server.replies import CommandFailed
from imapproxy.server.session import SELECTED, Session, handles
from imapproxy.server.view import SelectedView
from imapproxy.store import Tx, cache
from imapproxy.store import messages as store_messages
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.sync.content import Fetched, Need
from imapproxy.types import UID, BlobId, SeqNum
from imapproxy.upstream.errors import UpstreamUnavailable

SIMPLE = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"}
HEADER_TEXTS = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"}
BINARY_ITEMS = {"BINARY", "BINARY.SIZE"}
#: Messages rendered per step; between steps the client drains and others get a turn.
RENDER_BATCH = 200
#: The step when each answer carries message content (up to max_append each): a few
#: bodies in memory at a time, not 200.
BODY_RENDER_BATCH = 10
#: Messages whose records are read together (one read transaction) and whose missing
#: metadata is fetched upstream together (one UID FETCH); missing bodies go
#: BODY_FILL_GROUP at a time.
FILL_GROUP = 1000
BODY_FILL_GROUP = 50
BODY_KINDS = {Kind.FULL, Kind.SECTION}

log = logging.getLogger(__name__)


def render_batch(needs: set[Need]) -> int:
    """How many messages to render before waiting for the client to take them."""
    return BODY_RENDER_BATCH if any(n.kind in BODY_KINDS for n in needs) else RENDER_BATCH


def needs_of(attribute: p.FetchAttribute) -> set[Need]:
    name = attribute.name
    if name in SIMPLE:
        return set()
    if name == "ENVELOPE":
        return {Need(Kind.ENVELOPE)}
    if name == "BODYSTRUCTURE":
        return {Need(Kind.BODYSTRUCTURE)}
    if name == "BODY" and attribute.section is None:
        return {Need(Kind.BODY)}
    if name == "RFC822.HEADER":
        return {Need(Kind.HEADER)}
    if name in ("RFC822", "RFC822.TEXT"):
        return {Need(Kind.FULL)}
    if name in BINARY_ITEMS:
        return {Need(Kind.FULL)}  # decoded here from the whole cached message
    if name == "BODY" and attribute.section is not None:
        section = attribute.section
        if not section.part:
            return {Need(Kind.HEADER)} if section.text in HEADER_TEXTS else {Need(Kind.FULL)}
        return {Need(Kind.SECTION, str(section))}
    raise CommandFailed(f"FETCH {name} is not supported", status="BAD")


def sets_seen(attribute: p.FetchAttribute) -> bool:
    return (
        attribute.name in ("BODY", "BINARY")
        and attribute.section is not None
        and not attribute.peek
    ) or attribute.name in (
        "RFC822",
        "RFC822.TEXT",
    )


class MessageContent:
    """One message's cached content for one FETCH: each piece read from the cache, and
    the MIME structure parsed, at most once however many sections are asked for."""

    _MISSING = object()

    def __init__(
        self, tx: Tx, account: int, message: Message, fresh: Fetched | None = None
    ) -> None:
        self.tx = tx
        self.account = account
        self.message = message
        #: Content just fetched for this FETCH and not kept yet (sync/content.py).
        self.fresh = fresh
        self._full: object = self._MISSING
        self._header: object = self._MISSING
        self._parsed: mime.ParsedMessage | None = None

    def get(self, kind: Kind, section: str = "") -> bytes | None:
        if self.fresh is not None:
            found = self.fresh.get(self.message.blob, kind, section)
            if found is not None:
                return found
        return cache.get(self.tx, self.account, self.message.blob, kind, section)  # type: ignore[arg-type]

    @property
    def full(self) -> bytes | None:
        if self._full is self._MISSING:
            self._full = self.get(Kind.FULL)
        return self._full  # type: ignore[return-value]

    @property
    def header(self) -> bytes | None:
        if self._header is self._MISSING:
            header = self.get(Kind.HEADER)
            if header is None and self.full is not None:
                header = mime.split_header(self.full)[0]
            self._header = header
        return self._header  # type: ignore[return-value]

    def binary(self, section: p.Section) -> bytes | None:
        """BINARY[section] decoded from the cached full message (None if not cached)."""
        full = self.full
        if full is None:
            return None
        if self._parsed is None:
            self._parsed = mime.ParsedMessage(full)
        try:
            return self._parsed.binary(section.part)
        except mime.UnknownEncoding as exc:
            raise CommandFailed(
                f"unknown Content-Transfer-Encoding {exc}",
                response_code=replies.code("UNKNOWN-CTE"),
            ) from exc

    def section(self, section: p.Section) -> bytes | None:
        if section.part:
            full = self.full
            if full is None:
                return self.get(Kind.SECTION, str(section))
            if self._parsed is None:
                self._parsed = mime.ParsedMessage(full)
            # A part that does not exist is the empty string, as Dovecot answers.
            return self._parsed.section(section.part, section.text, section.fields) or b""
        if section.text in HEADER_TEXTS:
            header = self.header
            if header is None or section.text == "HEADER":
                return header
            if section.text == "HEADER.FIELDS":
                return mime.header_fields(header, section.fields, False)
            return mime.extract_section(header, (), section.text, section.fields) or b""
        full = self.full
        if full is None or section.text is None:
            return full
        return mime.split_header(full)[1]


def _partial(data: bytes, attribute: p.FetchAttribute) -> bytes:
    if attribute.partial is None:
        return data
    start, length = attribute.partial
    return mime.partial(data, start, length)


class Unavailable(Exception):
    """Content for this message is not in the cache (and the upstream could not give it)."""


def item_value(content: MessageContent, attribute: p.FetchAttribute) -> p.Value:
    message = content.message
    name = attribute.name
    if name == "UID":
        return message.uid
    if name == "FLAGS":
        return replies.atoms(message.flags)
    if name == "INTERNALDATE":
        return message.internaldate.encode()
    if name == "RFC822.SIZE":
        return message.size
    if name == "MODSEQ":
        return (message.modseq,)
    if name in ("ENVELOPE", "BODYSTRUCTURE") or (name == "BODY" and attribute.section is None):
        kind = {"ENVELOPE": Kind.ENVELOPE, "BODYSTRUCTURE": Kind.BODYSTRUCTURE}.get(name, Kind.BODY)
        data = content.get(kind)
        if data is None:
            raise Unavailable()
        return p.Raw(data)
    section = attribute.section
    if name in BINARY_ITEMS:
        assert section is not None
        data = content.binary(section)
        if data is None:
            raise Unavailable()
        if name == "BINARY.SIZE":
            return len(data)
        data = _partial(data, attribute)
        return p.Literal8(data) if b"\0" in data else data
    if name == "RFC822":
        section = p.Section()
    elif name == "RFC822.HEADER":
        section = p.Section(text="HEADER")
    elif name == "RFC822.TEXT":
        section = p.Section(text="TEXT")
    assert section is not None
    data = content.section(section)
    if data is None:
        raise Unavailable()
    return _partial(data, attribute)


def _content_size(value: p.Value) -> int:
    """Bytes of message content in one item (for the served-from-cache counter)."""
    if isinstance(value, (p.Raw, p.Literal8)):
        return len(value.data)
    return len(value) if isinstance(value, bytes) else 0


async def _send_rendered(
    session: Session,
    render: Callable[[Tx, Message, int], list[bytes] | None],
    messages: list[Message],
    seq_of: dict[UID, SeqNum],
    batch: int,
) -> list[Message]:
    """Send the FETCH lines of messages the cache can answer, batch by batch as the
    client drains them; return the messages it could not answer."""
    misses: list[Message] = []
    for start in range(0, len(messages), batch):
        chunk = messages[start : start + batch]
        rendered = session.account.store.read(partial(_render_all, render, chunk, seq_of))
        for message, lines in zip(chunk, rendered, strict=True):
            if lines is None:
                misses.append(message)
            else:
                session.send(lines)
        await session.connection.drained()
    return misses


def _render_all(
    render: Callable[[Tx, Message, int], list[bytes] | None],
    chunk: list[Message],
    seq_of: dict[UID, SeqNum],
    tx: Tx,
) -> list[list[bytes] | None]:
    return [render(tx, m, seq_of[m.uid]) for m in chunk]


async def _send_lines(
    session: Session,
    lines: LineFormat,
    messages: list[Message],
    seq_of: dict[UID, SeqNum],
    batch: int,
) -> list[Message]:
    """``_send_rendered`` for a FETCH of metadata only (fetch_lines.py): each batch's
    lines go out in one write."""
    misses: list[Message] = []
    for start in range(0, len(messages), batch):
        chunk = messages[start : start + batch]
        out, lacking = session.account.store.read(
            partial(lines.lines, messages=chunk, seq_of=seq_of)
        )
        if out:
            session.send(out)
        misses += lacking
        await session.connection.drained()
    return misses


def _mark_seen(session: Session, view: SelectedView, targets: list[Message]) -> set[int]:
    """Set \\Seen in the replica and queue it for the upstream, without waiting: the
    body must not wait behind its own side effect (issue 6). The handler starts the
    replay once its answer is out (``outbox.drain_soon``). A later refusal is undone in
    the replica and other sessions are told, like any queued change; RFC 3501 lets
    \\Seen stay unset (the client may still STORE it)."""
    unseen = [m for m in targets if "\\SEEN" not in {f.upper() for f in m.flags}]
    if not unseen or view.readonly:
        return set()
    operation = flag_change(session, view.mailbox, unseen, "+", ("\\Seen",))
    if operation is not None:
        session.account.outbox.perform_later(operation, origin=session)
    view.forget_flag_news(m.uid for m in unseen)
    return {m.uid for m in unseen}


def _groups(pairs: Iterator[tuple[SeqNum, UID]], size: int) -> Iterator[list[tuple[SeqNum, UID]]]:
    while group := list(islice(pairs, size)):
        yield group


@dataclass
class _Group:
    """Messages of one FETCH group: loaded in one read, served before the next is read
    (while the upstream already works on the next group's missing metadata)."""

    messages: list[Message]
    seq_of: dict[UID, SeqNum]
    misses: list[Message] = field(default_factory=list)
    fill: defer.Deferred[bool] | None = None


@handles(p.Fetch, SELECTED)
async def fetch(session: Session, cmd: p.Fetch) -> list[bytes]:
    """Streams: the targets are loaded, completed from the upstream and sent a group
    of FILL_GROUP at a time, and the client's reading paces it (``drained``), so a
    FETCH of a whole 100,000-message mailbox holds one or two groups in memory, not
    the mailbox. \\Seen is set per group too (one queued change each)."""
    view = session.selected
    if cmd.vanished and not session.modes.qresync:
        raise CommandFailed("VANISHED needs ENABLE QRESYNC first", status="BAD")
    asks_modseq = any(a.name == "MODSEQ" for a in cmd.attributes)
    if cmd.changedsince is not None or asks_modseq:
        session.send(condstore.enable_condstore(session.modes, view))
    store = session.account.store
    mailbox = view.mailbox
    attributes = [a for a in cmd.attributes if a.name != "UID"]
    needs: set[Need] = set()
    for attribute in attributes:
        needs |= needs_of(attribute)
    pairs = view.resolve_lazily(cmd.sequence_set, cmd.uid)
    since = cmd.changedsince
    if since is not None:
        # RFC 7162 §3.1.4.1: only what changed since, with MODSEQ; VANISHED (EARLIER)
        # first for what was expunged since (§3.2.6).
        if cmd.vanished:
            session.send(condstore.vanished_earlier(view, since, cmd.sequence_set))
        if not asks_modseq:
            attributes.append(p.FetchAttribute("MODSEQ"))
            asks_modseq = True
    sets_seen_flag = any(sets_seen(a) for a in attributes)
    wants_flags = any(a.name == "FLAGS" for a in attributes)
    guard_told = False
    if asks_modseq:
        guard_told = True
        guard = view.modseq_guard()
        if guard:
            session.send(guard)

    served = 0
    reads_bodies = any(n.kind in BODY_KINDS for n in needs)
    read: list[BlobId] = []  # bodies served, for the cache's least-recently-read order
    seen_now: set[int] = set()
    lines = LineFormat(view, attributes) if fetch_lines.applies(attributes) else None
    # What the upstream gives is served from memory and kept once the session pauses
    # (server/held_content.py). The lines of metadata read the cache alone, so what the
    # session holds is kept first, and what they fetch is kept at once.
    held = session.held
    fresh: Fetched | None = held.fetched
    if lines is not None:
        held.keep()
        fresh = None

    def after_answer() -> None:
        held.answered()
        if read:
            session.account.content_read(read)

    if fresh is not None:  # the lines of metadata leave nothing for after
        session.after_answer(after_answer)

    def render(tx: Tx, message: Message, seq: int) -> list[bytes] | None:
        nonlocal served
        items: list[p.Value] = [p.Atom("UID"), message.uid]
        content = MessageContent(tx, mailbox.account, message, fresh)
        size = 0
        try:
            for attribute in attributes:
                value = (
                    view.flags_of(message)
                    if attribute.name == "FLAGS"
                    else item_value(content, attribute)
                )
                items += [p.Atom(attribute.response_name()), value]
                if attribute.name not in SIMPLE:
                    size += _content_size(value)
        except Unavailable:
            return None
        served += size
        if reads_bodies:
            read.append(message.blob)
        if message.uid in seen_now and not wants_flags:
            items += [p.Atom("FLAGS"), view.flags_of(message)]
        if message.uid in seen_now and session.modes.condstore and not asks_modseq:
            items += [p.Atom("MODSEQ"), (message.modseq,)]  # RFC 7162 §3.2.4
        return replies.untagged("FETCH", tuple(items), number=seq)

    def load(group: list[tuple[SeqNum, UID]]) -> _Group:
        """One group's records, \\Seen set where bodies are read, and the FLAGS news
        its lines need first."""
        nonlocal guard_told
        uids = [uid for _, uid in group]

        def read_targets(tx: Tx) -> list[Message]:
            return store_messages.get_many(tx, mailbox.account, mailbox.id, uids)

        targets = store.read(read_targets)
        if since is not None:
            targets = [m for m in targets if m.modseq > since]
            uids = [m.uid for m in targets]
        seen: set[int] = set()
        if sets_seen_flag:
            seen = _mark_seen(session, view, targets)
            if seen:
                seen_now.update(seen)
                targets = store.read(read_targets)  # with the \Seen just set
        if wants_flags or seen:
            # A keyword this client has not been told of yet: FLAGS first (RFC 3501 §7.2.6).
            news = view.keyword_news(m.flags for m in targets)
            if news:
                session.send(news)
        if seen and session.modes.condstore and not guard_told:
            guard_told = True
            guard = view.modseq_guard()
            if guard:
                session.send(guard)
        return _Group(targets, {uid: seq for seq, uid in group})

    batch = render_batch(needs)

    async def send(messages: list[Message], seq_of: dict[UID, SeqNum]) -> list[Message]:
        if lines is not None:
            return await _send_lines(session, lines, messages, seq_of, batch)
        return await _send_rendered(session, render, messages, seq_of, batch)

    unavailable = False

    async def fill(misses: list[Message]) -> bool:
        """Fetch what the cache lacks of misses; False if the upstream is unreachable."""
        try:
            await session.account.ensure_content(mailbox, misses, needs, fresh)
        except UpstreamUnavailable:
            return False
        return True

    missing = 0
    #: Groups whose upstream fetch was started and whose answer is not sent yet.
    inflight: list[_Group] = []

    def start_fill(group: _Group) -> None:
        if group.misses and needs and not unavailable:
            group.fill = defer.Deferred.fromCoroutine(fill(group.misses))
            inflight.append(group)

    async def finish(group: _Group) -> None:
        """Send what the upstream just gave for the group's misses."""
        nonlocal unavailable, missing
        misses = group.misses
        if group.fill is not None:
            # While the upstream works on this group: keep what is held if it is a lot
            # (a long FETCH holds HOLD_BYTES at most, and overshoots the limit by as much).
            held.keep_if_full()
            if not await group.fill:
                unavailable = True
            inflight.remove(group)
            misses = await send(misses, group.seq_of)
        missing += len(misses)

    # Per group of FILL_GROUP records: send what the cache can answer, then fetch what
    # it cannot and send that. Metadata of the next group is fetched while this one is
    # sent; bodies BODY_FILL_GROUP at a time, each sent before the next is asked for,
    # so what is held beyond HOLD_BYTES (and the cache limit) is one such group at most.
    pending: _Group | None = None
    try:
        for chunk in _groups(pairs, FILL_GROUP):
            group = load(chunk)
            group.misses = await send(group.messages, group.seq_of)
            if needs:  # content was asked for: the cache answered it, or not
                METRICS.cache_hits.inc(len(group.messages) - len(group.misses))
                METRICS.cache_misses.inc(len(group.misses))
            if reads_bodies:
                for start in range(0, len(group.misses), BODY_FILL_GROUP):
                    part = _Group([], group.seq_of, group.misses[start : start + BODY_FILL_GROUP])
                    start_fill(part)
                    await finish(part)
                continue
            start_fill(group)
            if pending is not None:
                await finish(pending)
            pending = group
        if pending is not None:
            await finish(pending)
    finally:
        for group in inflight:  # the command failed meanwhile: the fetch goes on, unused
            assert group.fill is not None
            group.fill.addErrback(lambda failure: log.debug("FETCH fill: %s", failure))
    session.account.status.served(served + (lines.served if lines is not None else 0))
    if seen_now:
        session.account.outbox.drain_soon()  # the \Seen goes upstream after the bodies
    if missing and unavailable:
        raise CommandFailed(
            f"{missing} message(s) not available: upstream unreachable",
            response_code=replies.code("UNAVAILABLE"),
        )
    if missing:
        # The upstream answered without them: expunged there meanwhile (another client
        # moved them). A resync tells every session; the client hears what Dovecot says
        # in this case (RFC 5530).
        session.account.request_sync(mailbox.name)
        raise CommandFailed(
            f"{missing} message(s) were expunged upstream meanwhile",
            response_code=replies.code("EXPUNGEISSUED"),
        )
    return ok(session, cmd.tag, "FETCH completed", allow_expunge=False)
