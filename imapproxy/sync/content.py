"""Message content on first need: fetch what the cache lacks, in batches, once.

What a client reads is kept: ENVELOPE, BODYSTRUCTURE and BODY as the upstream
serialized them, the header block, the full message, and other body sections by
their section text. Anything derivable from what is cached (a header from the full
message, a MIME part from the full message) is not fetched at all. A message the
replica holds before the upstream does (APPENDed offline) gets its ENVELOPE,
BODYSTRUCTURE and BODY built here from its bytes, as the upstream would answer them
(imapproxy.message.fetch_structure), so it FETCHes like any other.

A message whose full body is cached under another blob (the same message in another
folder: same RFC822.SIZE, byte-identical header block) takes that body instead of a
download (sync/twins.py): as soon as its header block arrives with its metadata, and
again before a body is fetched for a client (asking the upstream for the header block
first, one small round trip, only when a cached body of exactly that size exists).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

from imapproxy.message import fetch_structure
from imapproxy.message.structure_wire import (
    body_bytes,
    envelope_bytes,
    upstream_structure_bytes,
)
from imapproxy.protocol import (
    FetchAttribute,
    ParseError,
    Section,
    SequenceSet,
    Value,
    parse_datetime,
    parse_fetch_attribute,
)
from imapproxy.store import Store, Tx, cache, messages, twins, usage
from imapproxy.store.cache import Kind
from imapproxy.store.mailboxes import Mailbox
from imapproxy.store.messages import Message
from imapproxy.sync.twins import take_cached
from imapproxy.types import BlobId
from imapproxy.upstream.client import UpstreamClient, as_int
from imapproxy.upstream.link import UpstreamLink

log = logging.getLogger(__name__)

#: Messages per upstream FETCH: metadata is small, bodies are not.
METADATA_BATCH = 1000
BODY_BATCH = 50
#: Bodies per upstream FETCH also stop at this many bytes (by RFC822.SIZE), so what
#: one command holds in memory stays near the largest single message.
BODY_BATCH_BYTES = 32 << 20


@dataclass(frozen=True)
class Need:
    """One piece of content: a cache kind, and for SECTION the section text."""

    kind: Kind
    section: str = ""

    def attribute(self) -> FetchAttribute:
        if self.kind is Kind.ENVELOPE:
            return FetchAttribute("ENVELOPE")
        if self.kind is Kind.BODYSTRUCTURE:
            return FetchAttribute("BODYSTRUCTURE")
        if self.kind is Kind.BODY:
            return FetchAttribute("BODY")
        if self.kind is Kind.HEADER:
            return FetchAttribute("BODY", Section(text="HEADER"), peek=True)
        if self.kind is Kind.FULL:
            return FetchAttribute("BODY", Section(), peek=True)
        return parse_fetch_attribute(f"BODY.PEEK[{self.section}]")

    def response_name(self) -> str:
        return self.attribute().response_name().upper()

    @property
    def is_body(self) -> bool:
        return self.kind in (Kind.FULL, Kind.SECTION)


HEADER_NEED = Need(Kind.HEADER)

#: One fetched message, its upstream item, and each need the item answered with the
#: bytes the cache keeps for it.
_Content = tuple[Message, dict[str, Value], list[tuple[Need, bytes]]]


class Fetched:
    """Content fetched for a session's FETCHes, served from memory before it is kept.

    The client's answer does not wait for the disk: keeping a body (a write
    transaction and its disk sync, about a millisecond of a first read's three) runs
    once the answer is out, when the session pauses (server/held_content.py). It is
    content the upstream can give again, so a keep that fails costs a later fetch,
    never data."""

    def __init__(self) -> None:
        self._pieces: dict[tuple[BlobId, Kind, str], bytes] = {}
        #: Per batch fetched: the store, and the transaction body that keeps it there.
        self._keeps: list[tuple[Store, Callable[[Tx], int]]] = []
        #: Bytes of content held (server/held_content.py bounds it).
        self.held_bytes = 0

    def get(self, blob: BlobId, kind: Kind, section: str = "") -> bytes | None:
        return self._pieces.get((blob, kind, section))

    def has(self, blob: BlobId, kind: Kind, section: str = "") -> bool:
        return (blob, kind, section) in self._pieces

    @property
    def pending(self) -> bool:
        return bool(self._keeps)

    def add(self, content: list[_Content], store: Store, keep: Callable[[Tx], int]) -> None:
        """Hold content; ``keep`` writes it in a transaction of store's (and returns the
        bytes it kept)."""
        for message, _, pieces in content:
            for need, data in pieces:
                self._pieces[(message.blob, need.kind, need.section)] = data
                self.held_bytes += len(data)
        self._keeps.append((store, keep))

    def keep(self) -> int:
        """Write what came, all in one transaction (one disk sync however many batches),
        and let go of it in memory; returns the bytes kept. Should that write fail, each
        batch is written on its own, so one that cannot be kept loses no other."""
        keeps, self._keeps = self._keeps, []
        self._pieces.clear()
        self.held_bytes = 0
        by_store: dict[int, tuple[Store, list[Callable[[Tx], int]]]] = {}
        for store, keep in keeps:
            by_store.setdefault(id(store), (store, []))[1].append(keep)
        kept = 0
        for store, bodies in by_store.values():
            try:
                kept += store.write(partial(_keep_all, bodies), durable=False)
                continue
            except Exception:
                if len(bodies) == 1:
                    log.exception("could not keep fetched content")
                    continue
            for body in bodies:
                try:
                    kept += store.write(body, durable=False)
                except Exception:  # served already; not cached, so fetched again if asked
                    log.exception("could not keep fetched content")
        return kept


def _keep_all(bodies: list[Callable[[Tx], int]], tx: Tx) -> int:
    return sum(body(tx) for body in bodies)


def _derivable(tx: Tx, message: Message, account: int, need: Need, fresh: Fetched | None) -> bool:
    if need.kind in (Kind.HEADER, Kind.SECTION):
        if fresh is not None and fresh.has(message.blob, Kind.FULL):
            return True
        return cache.has(tx, account, message.blob, Kind.FULL)  # type: ignore[arg-type]
    return False


def _held(fresh: Fetched | None, message: Message, need: Need) -> bool:
    return fresh is not None and fresh.has(message.blob, need.kind, need.section)


def missing(
    store: Store,
    mailbox: Mailbox,
    wanted: Iterable[Message],
    needs: set[Need],
    fresh: Fetched | None = None,
) -> dict[frozenset[Need], list[Message]]:
    """Group messages by which needs neither the cache nor ``fresh`` can answer."""

    def scan(tx: Tx) -> dict[frozenset[Need], list[Message]]:
        groups: dict[frozenset[Need], list[Message]] = defaultdict(list)
        for message in wanted:
            if message.upstream_uid is None:
                continue
            lacking = frozenset(
                need
                for need in needs
                if not _held(fresh, message, need)
                and not cache.has(tx, mailbox.account, message.blob, need.kind, need.section)
                and not _derivable(tx, message, mailbox.account, need, fresh)
            )
            if lacking:
                groups[lacking].append(message)
        return groups

    return store.read(scan)


async def fetch_missing(
    link: UpstreamLink,
    store: Store,
    mailbox: Mailbox,
    wanted: Iterable[Message],
    needs: set[Need],
    fresh: Fetched | None = None,
) -> int:
    """Fetch and keep what the cache lacks of needs for wanted; returns the bytes fetched.

    With ``fresh``, what comes is held there to be served first and kept later
    (``Fetched.keep``); a twin's body is still taken at once, since it decides what
    is fetched.

    A body larger than the link accepts (its ``max_message``) is not asked for: it stays
    missing, and the caller answers that message as unavailable instead of the upstream
    connection failing on it."""
    wanted = list(wanted)
    fetched = 0
    if any(n.is_body for n in needs):
        unheld = [m for m in wanted if fresh is None or not fresh.has(m.blob, Kind.FULL)]
        fetched += await _take_twins(link, store, mailbox, unheld)
    groups = missing(store, mailbox, wanted, needs, fresh)
    for group_needs, group in groups.items():
        if any(n.is_body for n in group_needs):
            fits = [m for m in group if m.size <= link.max_message]
            if len(fits) < len(group):
                log.warning(
                    "%d message(s) in %r exceed the %d-byte message limit; not fetched",
                    len(group) - len(fits),
                    mailbox.name,
                    link.max_message,
                )
            batches = _by_size(fits, BODY_BATCH, BODY_BATCH_BYTES)
        else:
            batches = [group[i : i + METADATA_BATCH] for i in range(0, len(group), METADATA_BATCH)]
        for batch in batches:
            fetched += await fetch_batch(link, store, mailbox, batch, group_needs, fresh=fresh)
    return fetched


async def _take_twins(
    link: UpstreamLink, store: Store, mailbox: Mailbox, wanted: list[Message]
) -> int:
    """Before bodies are fetched: messages whose twin's body is cached take it (their
    header block asked for first where it is not cached yet); returns bytes fetched."""
    account = mailbox.account

    def look(tx: Tx) -> tuple[list[tuple[Message, bytes]], list[Message]]:
        known: list[tuple[Message, bytes]] = []
        ask: list[Message] = []
        for message in wanted:
            if (
                message.upstream_uid is None
                or cache.has(tx, account, message.blob, Kind.FULL)
                or not twins.any_of_size(tx, account, message.size)
            ):
                continue
            header = cache.get(tx, account, message.blob, Kind.HEADER)
            if header is None:
                ask.append(message)
            else:
                known.append((message, header))
        return known, ask

    known, ask = store.read(look)
    if known:
        store.write(lambda tx: take_cached(tx, account, known))
    fetched = 0
    for start in range(0, len(ask), METADATA_BATCH):
        batch = ask[start : start + METADATA_BATCH]
        fetched += await fetch_batch(link, store, mailbox, batch, frozenset({HEADER_NEED}))
    return fetched


def _by_size(messages: list[Message], count: int, size: int) -> list[list[Message]]:
    """Consecutive batches of at most count messages and (beyond the first) size bytes."""
    batches: list[list[Message]] = []
    current: list[Message] = []
    total = 0
    for message in messages:
        if current and (len(current) >= count or total + message.size > size):
            batches.append(current)
            current, total = [], 0
        current.append(message)
        total += message.size
    if current:
        batches.append(current)
    return batches


async def fetch_batch(
    link: UpstreamLink,
    store: Store,
    mailbox: Mailbox,
    batch: list[Message],
    needs: frozenset[Need],
    *,
    prefetched: bool = False,
    background: bool = False,
    fresh: Fetched | None = None,
) -> int:
    """One upstream UID FETCH of needs for batch (one turn on the link); returns bytes kept
    (with ``fresh``: held there, to be kept later).

    Bodies fetched for a client count as read now; ``prefetched`` ones as not read yet
    (store/usage.py: they are evicted before anything a client read). A client's fetch
    waits for the link at most its client_wait; ``background`` work (metadata,
    prefetch), which nobody waits for, waits for a quiet link and then its turn."""
    by_upstream = {int(m.upstream_uid): m for m in batch if m.upstream_uid is not None}
    attributes = tuple(
        need.attribute() for need in sorted(needs, key=lambda n: (n.kind.value, n.section))
    )

    async def fetch(client: UpstreamClient) -> list[dict[str, Value]]:
        await client.ensure_selected(mailbox.name)
        return await client.fetch(SequenceSet.from_ints(by_upstream), attributes)

    items = await link.use(fetch, background=background, reads_only=True, spare=background)
    content = list(_content(by_upstream, needs, items))

    def keep(tx: Tx) -> int:
        return _keep(tx, mailbox, needs, content, prefetched)

    if fresh is None:
        # Not durable: fetched again if a power loss takes it back, and a client's read
        # does not wait for a second disk sync (store/_env.py).
        return store.write(keep, durable=False)
    fresh.add(content, store, keep)
    return sum(len(data) for _, _, pieces in content for _, data in pieces)


def _prefetch_stamp(message: Message) -> int:
    try:
        received = parse_datetime(message.internaldate).timestamp()
    except (ParseError, ValueError):
        received = 0.0
    return usage.prefetch_stamp(received)


def _content(
    by_upstream: dict[int, Message], needs: frozenset[Need], items: list[dict[str, Value]]
) -> Iterator[_Content]:
    """Each message the upstream answered for, with what of it the cache keeps."""
    # Each need's item name once per batch, not per message (it builds a FetchAttribute).
    named = [(need, need.response_name()) for need in needs]
    for item in items:
        message = by_upstream.get(as_int(item["UID"]))
        if message is None:
            continue
        pieces: list[tuple[Need, bytes]] = []
        for need, name in named:
            if name not in item:
                continue
            value = item[name]
            if value is None and need.kind not in (Kind.SECTION,):
                # NIL for a whole message, its header or its structure: the upstream no
                # longer has it (expunged meanwhile). Nothing is kept, so the client
                # hears that, never an empty message. (A part that does not exist may
                # be NIL: sections keep the upstream's empty answer.)
                continue
            if need.kind in (Kind.ENVELOPE, Kind.BODYSTRUCTURE, Kind.BODY):
                data = upstream_structure_bytes(name, value)
            else:
                data = value if isinstance(value, bytes) else b""
            pieces.append((need, data))
        yield message, item, pieces


def _keep(
    tx: Tx,
    mailbox: Mailbox,
    needs: frozenset[Need],
    content: list[_Content],
    prefetched: bool = False,
) -> int:
    kept = 0
    for message, item, pieces in content:
        for need, data in pieces:
            stamp = _prefetch_stamp(message) if prefetched and need.is_body else None
            cache.put(tx, mailbox.account, message.blob, need.kind, data, need.section, stamp=stamp)
            kept += len(data)
        header = item.get(HEADER_NEED.response_name()) if HEADER_NEED in needs else None
        if (
            isinstance(header, bytes)
            and twins.any_of_size(tx, mailbox.account, message.size)
            and _still_there(tx, mailbox, message)
        ):  # perhaps the same message as one in another folder: its body, then
            take_cached(tx, mailbox.account, [(message, header)])
        # Expunged while the FETCH was on its way: what just came is freed (store/reclaim.py).
        tx.maybe_unused.add((mailbox.account, message.blob))
    return kept


def _still_there(tx: Tx, mailbox: Mailbox, message: Message) -> bool:
    current = messages.get(tx, mailbox.account, mailbox.id, message.uid)
    return current is not None and current.blob == message.blob


def keep_local_structure(tx: Tx, account: int, blob: int, raw: bytes | bytearray) -> bool:
    """Cache ENVELOPE, BODYSTRUCTURE and BODY built from raw, serialized as the
    upstream's answers are; returns whether they were kept.

    Any failure to build them keeps none: the message's FETCH of them then answers
    ``NO [UNAVAILABLE]`` until the upstream has it, as before (never a wrong answer
    half-built)."""
    data = bytes(raw)
    try:
        built = {
            Kind.ENVELOPE: envelope_bytes(fetch_structure.envelope(data)),
            Kind.BODYSTRUCTURE: body_bytes(fetch_structure.bodystructure(data)),
            Kind.BODY: body_bytes(fetch_structure.body(data)),
        }
    except Exception:  # a message we cannot describe stays undescribed
        log.exception("could not build ENVELOPE/BODYSTRUCTURE of a local message")
        return False
    for kind, value in built.items():
        cache.put(tx, account, blob, kind, value)  # type: ignore[arg-type]
    return True
