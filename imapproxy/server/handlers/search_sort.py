"""SORT / UID SORT (RFC 5256, RFC 5957 display keys, RFC 5267 ESORT), evaluated on the
replica.

The messages are chosen exactly as SEARCH chooses them (search.matching). The keys come
from each message's cached header block, which the background sync keeps for every
message; headers still missing are fetched once while the upstream answers. Offline,
a message whose header is not cached sorts with empty keys and its arrival date, and
the completion text says how many there were — the same honesty as an offline SEARCH.
"""

from __future__ import annotations

from typing import Any

from imapproxy import message as mime
from imapproxy import protocol as p
from imapproxy.server import replies, sorting
from imapproxy.server.handlers.general import ok
from imapproxy.server.handlers.search import matching, save_result, saving
from imapproxy.server.session import SELECTED, Session, handles
from imapproxy.store import Tx, cache
from imapproxy.store.cache import Kind
from imapproxy.store.messages import Message
from imapproxy.sync.content import Need
from imapproxy.types import UID
from imapproxy.upstream.errors import UpstreamUnavailable

HEADER = Need(Kind.HEADER)


async def headers_of(session: Session, found: list[Message]) -> tuple[dict[UID, bytes], int]:
    """Each message's header block (b"" when not to be had) and how many were missing."""
    view = session.selected
    mailbox = view.mailbox
    if found:
        try:
            await session.account.ensure_content(mailbox, found, {HEADER})
        except UpstreamUnavailable:
            pass  # sort on what the replica holds

    def read(tx: Tx) -> tuple[dict[UID, bytes], int]:
        out: dict[UID, bytes] = {}
        missing = 0
        for message in found:
            block = cache.get(tx, mailbox.account, message.blob, Kind.HEADER)  # type: ignore[arg-type]
            if block is None:
                full = cache.get(tx, mailbox.account, message.blob, Kind.FULL)  # type: ignore[arg-type]
                block = None if full is None else mime.split_header(bytes(full))[0]
            if block is None:
                missing += 1
            out[message.uid] = b"" if block is None else bytes(block)
        return out, missing

    return session.account.store.read(read)


def missing_note(missing: int) -> str:
    if not missing:
        return ""
    return f"; {missing} message(s) ordered without their header: it is not cached"


async def _facts(
    session: Session, cmd: p.Sort
) -> tuple[list[Message], list[sorting.SortFacts], str]:
    """The matching messages and their keys (only those the program names: ARRIVAL and
    SIZE alone need no header at all)."""
    view = session.selected
    found, note = await matching(session, cmd.criteria, cmd.charset)
    keys = {name for name, _ in cmd.program}
    if keys <= {"ARRIVAL", "SIZE"}:
        headers, missing = dict.fromkeys((m.uid for m in found), b""), 0
    else:
        headers, missing = await headers_of(session, found)
    out = []
    for message in found:
        seq = view.seq(message.uid)
        assert seq is not None
        out.append(
            sorting.facts(
                seq,
                message.uid if cmd.uid else seq,
                p.parse_datetime(message.internaldate),
                message.size,
                headers[message.uid],
                keys,
            )
        )
    return found, out, note + missing_note(missing)


def _esort(cmd: p.Sort, numbers: list[int]) -> list[bytes]:
    """``* ESEARCH`` for SORT RETURN (RFC 5267 §3): MIN and MAX are the first and last
    message in sort order (as Dovecot answers), ALL lists them in sort order."""
    options = set(cmd.return_options or ()) or {"ALL"}
    values: list[Any] = [(p.Atom("TAG"), cmd.tag.encode())]
    if cmd.uid:
        values.append(p.Atom("UID"))
    if numbers:
        if "MIN" in options:
            values += [p.Atom("MIN"), numbers[0]]
        if "MAX" in options:
            values += [p.Atom("MAX"), numbers[-1]]
        if "ALL" in options:
            values += [p.Atom("ALL"), p.Atom(_in_order(numbers))]
    if "COUNT" in options:
        values += [p.Atom("COUNT"), len(numbers)]
    return replies.untagged("ESEARCH", *values)


def _in_order(numbers: list[int]) -> str:
    """A sequence set keeping the given order: only ascending runs become ranges."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


@handles(p.Sort, SELECTED)
async def sort(session: Session, cmd: p.Sort) -> list[bytes]:
    with saving(session, cmd.return_options):
        found, facts, note = await _facts(session, cmd)
    ordered = sorting.sort(facts, cmd.program)
    numbers = [f.number for f in ordered]
    if cmd.return_options is None:
        session.send(replies.untagged("SORT", *numbers))
    else:
        by_seq = {f.seq: m for f, m in zip(facts, found, strict=True)}
        save_result(session, cmd.return_options, [by_seq[f.seq] for f in ordered])
        if set(cmd.return_options) != {"SAVE"}:  # SAVE alone answers nothing (RFC 5182)
            session.send(_esort(cmd, numbers))
    return ok(session, cmd.tag, "SORT completed" + note, allow_expunge=False)
