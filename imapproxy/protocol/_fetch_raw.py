"""A FETCH response's attribute list with chosen items kept as the server's own bytes.

The proxy stores ENVELOPE, BODYSTRUCTURE and BODY exactly as it later sends them, and
needs their meaning only rarely. Building them into values (dozens of tokens per
message) only to serialize them again was most of the CPU of a first sync; here such
an item is located by tracking parentheses and quoted strings, and kept as ``Raw``.

Only what can be passed on as it is gets that treatment: a value inside one line
(no literal), with no byte outside printable 7-bit ASCII (a quoted string with 8-bit
data is not valid towards an IMAP4rev1 client). Anything else is read as values, as
before, and is serialized by us.
"""

from __future__ import annotations

import re

from ._errors import ParseError
from ._lexer import END, Scanner
from ._values import Atom, Raw, Value

__all__ = ["RAW_FETCH_ITEMS", "read_fetch_attributes"]

#: FETCH items whose wire form is kept as the server sent it.
RAW_FETCH_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})

#: One token of a list, matched back to back: plain text, "(", ")" or a quoted string.
_TOKEN = re.compile(rb'[^()"]+|(\()|(\))|"[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*"')
_NOT_PLAIN = re.compile(rb"[^\x20-\x7e]")


def _list_end(text: bytes, pos: int, max_depth: int) -> int | None:
    """Where the parenthesized list starting at text[pos] ends, or None when it does
    not end in this text part (a literal follows), nests too deeply, or is malformed
    (the ordinary reader then says what is wrong)."""
    depth = 0
    match = _TOKEN.scanner(text, pos).match  # type: ignore[attr-defined]
    while (m := match()) is not None:
        kind = m.lastindex
        if kind == 1:
            depth += 1
            if depth > max_depth:
                return None
        elif kind == 2:
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def read_fetch_attributes(scanner: Scanner, raw_items: frozenset[str]) -> tuple[Value, ...]:
    """The ``(name value ...)`` list of a FETCH response at the scanner, with the
    values of raw_items kept as ``Raw`` where they can be."""
    if scanner.peek_char() != 0x28:
        raise ParseError("malformed FETCH response")
    scanner.pos += 1
    items: list[Value] = []
    while True:
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
                end = _list_end(text, start, scanner.max_depth)
                if end is not None and _NOT_PLAIN.search(text, start, end) is None:
                    items.append(Raw(text[start:end]))
                    scanner.pos = end
                    continue
        value = scanner.read_value(1)
        if value is END:
            raise ParseError("FETCH item without a value")
        items.append(value)  # type: ignore[arg-type]
