"""A FETCH response's attribute list, read with shortcuts for what servers send most.

The proxy stores ENVELOPE, BODYSTRUCTURE and BODY exactly as it later sends them, and
needs their meaning only rarely. Building them into values (dozens of tokens per
message) only to serialize them again was most of the CPU of a first sync; here such
an item is located by matching its balanced parentheses (one regular expression, run
in C) and kept as ``Raw``. The items every message-list FETCH carries (UID, FLAGS,
INTERNALDATE, RFC822.SIZE, MODSEQ) are read with one match each, too: after the raw
items they were the rest of that CPU (about 45 µs a response through the general
reader, which a 100,000-message first sync pays 100,000 times).

Each shortcut takes only text whose meaning it is sure of, and yields exactly the
values the general reader would; anything else (8-bit data outside a literal, a
digit-only keyword, an unusual spelling) is read the ordinary way. A raw item keeps
its literals (Dovecot sends a file name in raw UTF-8 as one), re-announced as ``{n}``:
8-bit data is valid in a literal for any client. Outside literals only printable 7-bit
ASCII is kept raw: a quoted string with 8-bit data is not valid towards an IMAP4rev1
client, so such a value is read and serialized by us.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ._errors import ParseError
from ._lexer import END, Scanner
from ._values import Atom, Raw, Value

__all__ = ["RAW_FETCH_ITEMS", "read_fetch_attributes", "read_list_entry"]

#: FETCH items whose wire form is kept as the server sent it.
RAW_FETCH_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})

#: Nesting the one-pass pattern follows; deeper lists take the token-by-token scan.
#: An ENVELOPE nests 3 deep, a BODYSTRUCTURE about 2 per MIME level.
_PATTERN_DEPTH = 12


#: Printable 7-bit text other than parentheses, and quoted strings of it.
_PLAIN = rb'[ !#-\'*-~]++|"(?:[ !#-\[\]-~]++|\\[ -~])*+"'


def _balanced_list(depth: int) -> re.Pattern[bytes]:
    """A parenthesized list of printable 7-bit text and quoted strings, nested at most
    depth deep. Possessive repeats: a text that does not match fails without
    backtracking, so a hostile line costs one pass."""
    plain = rb"(?:" + _PLAIN + rb")*+"
    inner = plain
    for _ in range(depth - 1):
        inner = plain + rb"(?:\(" + inner + rb"\)" + plain + rb")*+"
    return re.compile(rb"\(" + inner + rb"\)")


_BALANCED = _balanced_list(_PATTERN_DEPTH)
#: What a list holding a literal has between its unbalanced parentheses: printable text,
#: quoted strings and whole lists, in one match.
_FLAT = re.compile(rb"(?:" + _PLAIN + rb"|" + _BALANCED.pattern + rb")*+")

#: One token of a list, matched back to back: plain text, "(", ")" or a quoted string.
_TOKEN = re.compile(rb'[^()"]+|(\()|(\))|"[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*"')
_NOT_PLAIN = re.compile(rb"[^\x20-\x7e]")

#: The everyday items, each as one match: a number (no leading zero: "007" is an atom
#: to the general reader), a flag list of plain atoms, a date string without escapes,
#: a MODSEQ, and the name of an item that may be kept raw. Groups: (1, 2) number item,
#: (3, 4) FLAGS, (5, 6) INTERNALDATE, (7) MODSEQ, (8) ENVELOPE or BODY[STRUCTURE].
_EVERYDAY_ITEM = re.compile(
    rb" *(?:(UID|RFC822\.SIZE|X-GM-MSGID|X-GM-THRID) (0|[1-9][0-9]{0,18})(?=[ )])"
    rb"|(FLAGS) \(([!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|~\\ ]*)\)"
    rb'|(INTERNALDATE) "([ !#-\[\]-~]*)"'
    rb"|MODSEQ \((0|[1-9][0-9]{0,18})\)"
    rb"|(ENVELOPE|BODYSTRUCTURE|BODY) (?=\())"
)
#: The four items every message-list FETCH answer begins with, in the order Dovecot
#: (and most servers) send them: one match instead of four. Each part takes exactly
#: what its _EVERYDAY_ITEM alternative takes.
_LIST_HEAD = re.compile(
    rb"UID (0|[1-9][0-9]{0,18}) FLAGS \(([!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|~\\ ]*)\) "
    rb'INTERNALDATE "([ !#-\[\]-~]*)" RFC822\.SIZE (0|[1-9][0-9]{0,18})(?=[ )])'
)
#: A whole message-list response as most servers send it when none of it is a literal:
#: the list head, ENVELOPE and BODYSTRUCTURE, and the end of the list at the end of the
#: line. Each part takes exactly what its own shortcut takes; anything else (another
#: order, more items, a literal, a list nested deeper than _BALANCED follows) goes the
#: item-by-item way.
_LIST_ENTRY = re.compile(
    rb" *\(" + _LIST_HEAD.pattern + rb" ENVELOPE (" + _BALANCED.pattern + rb")"
    rb" BODYSTRUCTURE (" + _BALANCED.pattern + rb")\) *\Z"
)
_NAMES = {
    name: Atom(name.decode())
    for name in (
        *(b"UID", b"RFC822.SIZE", b"X-GM-MSGID", b"X-GM-THRID", b"FLAGS", b"INTERNALDATE"),
        *(b"ENVELOPE", b"BODYSTRUCTURE", b"BODY"),
    )
}
_MODSEQ = Atom("MODSEQ")
_UID, _FLAGS = _NAMES[b"UID"], _NAMES[b"FLAGS"]
_INTERNALDATE, _SIZE = _NAMES[b"INTERNALDATE"], _NAMES[b"RFC822.SIZE"]
_ENVELOPE, _BODYSTRUCTURE = _NAMES[b"ENVELOPE"], _NAMES[b"BODYSTRUCTURE"]
_ENTRY_RAW = frozenset({"ENVELOPE", "BODYSTRUCTURE"})


@lru_cache(maxsize=4096)
def _flags(text: bytes) -> tuple[Atom, ...] | None:
    """A FLAGS list's atoms; None where the general reader would read something else
    (a digit-only keyword is a number to it, NIL is nil)."""
    flags = text.split()
    if any(f.isdigit() or f.upper() == b"NIL" for f in flags):
        return None
    return tuple(Atom(f.decode("ascii")) for f in flags)


def _list_end(parts: list[bytes], index: int, pos: int, max_depth: int) -> tuple[int, int] | None:
    """Where the parenthesized list starting at parts[index][pos] ends, as (part, offset),
    or None when it nests too deeply, holds 8-bit data outside a literal, or is
    malformed (the general reader then says what is wrong). A literal inside it (a
    file name in raw UTF-8, sent as a literal by Dovecot) is part of the list: the
    scan goes on in the text after it."""
    text = parts[index]
    if max_depth < _PATTERN_DEPTH:
        return _list_end_by_tokens(parts, index, pos, max_depth)
    m = _BALANCED.match(text, pos)
    if m is not None:
        return index, m.end()
    # Past the literal's start, only the parentheses _FLAT leaves are counted: a few per
    # list, where a token at a time took about 26 matches (one in eight of a first
    # sync's responses holds a literal; they took a third of the time to read them all).
    depth = 0
    flat = _FLAT.match
    while True:
        pos = flat(text, pos).end()  # type: ignore[union-attr]  # (it matches "")
        if pos < len(text):
            char = text[pos]
            pos += 1
            if char == 0x28:
                depth += 1
                if depth + _PATTERN_DEPTH > max_depth:
                    return None  # could nest deeper than allowed inside what _FLAT takes
            elif char == 0x29:
                depth -= 1
                if depth == 0:
                    return index, pos
            else:
                return None  # 8-bit data, a control character, an unterminated string
            continue
        # The text ran out inside the list: a literal must follow, where a value may start.
        if index + 2 >= len(parts) or text[-1:] not in (b" ", b"(") or b"\x00" in parts[index + 1]:
            return None
        index, pos = index + 2, 0
        text = parts[index]


def _list_end_by_tokens(
    parts: list[bytes], index: int, pos: int, max_depth: int
) -> tuple[int, int] | None:
    """_list_end a token at a time, for a depth limit below what _BALANCED follows."""
    text = parts[index]
    depth, start = 0, pos
    while True:
        match = _TOKEN.scanner(text, pos).match  # type: ignore[attr-defined]
        while (m := match()) is not None:
            pos = m.end()
            kind = m.lastindex
            if kind == 1:
                depth += 1
                if depth > max_depth:
                    return None
            elif kind == 2:
                depth -= 1
                if depth == 0:
                    return (index, pos) if _NOT_PLAIN.search(text, start, pos) is None else None
        # The text ran out inside the list: a literal must follow, where a value may start.
        if (
            pos != len(text)
            or index + 2 >= len(parts)
            or text[-1:] not in (b" ", b"(")
            or _NOT_PLAIN.search(text, start) is not None
            or b"\x00" in parts[index + 1]
        ):
            return None
        index, pos, start = index + 2, 0, 0
        text = parts[index]


def _raw(parts: list[bytes], index: int, pos: int, end_index: int, end: int) -> Raw:
    """The list from parts[index][pos] to parts[end_index][end], literals re-announced."""
    if index == end_index:
        return Raw(parts[index][pos:end])
    pieces = [parts[index][pos:]]
    for i in range(index + 1, end_index, 2):
        literal = parts[i]
        pieces += (b"{%d}\r\n" % len(literal), literal)
        pieces.append(parts[i + 1] if i + 1 < end_index else parts[end_index][:end])
    return Raw(b"".join(pieces))


def read_list_entry(
    text: bytes, pos: int, raw_items: frozenset[str], max_depth: int
) -> tuple[Value, ...] | None:
    """The attribute list of a one-line FETCH response from pos to the line's end, in
    one match, where it is a message-list entry (``_LIST_ENTRY``) with ENVELOPE and
    BODYSTRUCTURE kept raw; None where ``read_fetch_attributes`` must read it.

    87% of Dovecot's answer for a 10,000-message first sync are one, and the
    item-by-item reader's bookkeeping for them (a scanner, a match per item, two list
    ends found and cut out one by one) was a quarter of reading it: 25.6-26.3 µs a
    message before, 18.9-19.0 with this."""
    if max_depth < _PATTERN_DEPTH or not raw_items >= _ENTRY_RAW:
        return None
    m = _LIST_ENTRY.match(text, pos)
    if m is None:
        return None
    uid, flag_text, date, size, envelope, structure = m.groups()
    flags = _flags(flag_text)
    if flags is None:
        return None
    return (
        *(_UID, int(uid), _FLAGS, flags, _INTERNALDATE, date, _SIZE, int(size)),
        *(_ENVELOPE, Raw(envelope), _BODYSTRUCTURE, Raw(structure)),
    )


def read_fetch_attributes(scanner: Scanner, raw_items: frozenset[str]) -> tuple[Value, ...]:
    """The ``(name value ...)`` list of a FETCH response at the scanner, with the
    values of raw_items kept as ``Raw`` where they can be."""
    if scanner.peek_char() != 0x28:
        raise ParseError("malformed FETCH response")
    scanner.pos += 1
    items: list[Value] = []
    head = _LIST_HEAD.match(scanner.parts[scanner.index], scanner.pos)
    if head is not None:
        flags = _flags(head.group(2))
        if flags is not None:
            uid, _, date, size = head.groups()
            items += (_UID, int(uid), _FLAGS, flags, _INTERNALDATE, date, _SIZE, int(size))
            scanner.pos = head.end()
    everyday = _EVERYDAY_ITEM.match
    while True:
        text = scanner.parts[scanner.index]
        m = everyday(text, scanner.pos)
        if m is not None:
            kind = m.lastindex
            if kind == 2:
                items += (_NAMES[m.group(1)], int(m.group(2)))
                scanner.pos = m.end()
                continue
            if kind == 4:
                flags = _flags(m.group(4))
                if flags is not None:
                    items += (_NAMES[b"FLAGS"], flags)
                    scanner.pos = m.end()
                    continue
            elif kind == 6:
                items += (_NAMES[b"INTERNALDATE"], m.group(6))
                scanner.pos = m.end()
                continue
            elif kind == 7:
                items += (_MODSEQ, (int(m.group(7)),))
                scanner.pos = m.end()
                continue
            elif m.group(8).decode() in raw_items:
                start = m.end()
                found = _list_end(scanner.parts, scanner.index, start, scanner.max_depth)
                if found is not None:
                    items += (_NAMES[m.group(8)], _raw(scanner.parts, scanner.index, start, *found))
                    scanner.index, scanner.pos = found
                    continue
        name = scanner.read_value(1)
        if name is END:
            if scanner.peek_char() != 0x29:
                raise ParseError("unterminated list")
            scanner.pos += 1
            return tuple(items)
        items.append(name)  # type: ignore[arg-type]
        if isinstance(name, Atom) and name.value.upper() in raw_items:
            scanner.skip_spaces()
            text, start = scanner.text, scanner.pos
            if start < len(text) and text[start] == 0x28:
                found = _list_end(scanner.parts, scanner.index, start, scanner.max_depth)
                if found is not None:
                    items.append(_raw(scanner.parts, scanner.index, start, *found))
                    scanner.index, scanner.pos = found
                    continue
        value = scanner.read_value(1)
        if value is END:
            raise ParseError("FETCH item without a value")
        items.append(value)  # type: ignore[arg-type]
