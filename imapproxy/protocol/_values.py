"""The IMAP data model shared by commands and responses, and its serializer.

A parsed IMAP value is plain Python data so callers can pattern-match on it:
``None`` is NIL, ``int`` a number, ``bytes`` a string (quoted or literal on the
wire: the distinction carries no meaning), ``Atom`` an atom or flag, ``tuple``
a parenthesized list. ``Raw`` lets the proxy splice cached, already-serialized
text (an ENVELOPE, a BODYSTRUCTURE) into a response without re-parsing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "Atom",
    "Raw",
    "Value",
    "format_value_chunks",
    "quote_safe",
    "serialize_value",
]


@dataclass(frozen=True, slots=True)
class Atom:
    """An atom, flag or keyword exactly as it appears on the wire."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Raw:
    """Pre-serialized IMAP text the serializer emits verbatim."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Literal8:
    """Binary data sent as a literal8 (``~{n}``, RFC 3516): it may hold NUL bytes,
    which an ordinary literal must not."""

    data: bytes


Value: TypeAlias = None | int | bytes | Atom | Raw | Literal8 | tuple["Value", ...]

#: Longest string we send quoted; longer ones go as literals, because some
#: clients and servers cap quoted strings and a literal is always safe.
MAX_QUOTED = 1024
_QUOTABLE = re.compile(rb"[\x20-\x7e]*")


def quote_safe(data: bytes) -> bool:
    """True when ``data`` may be sent as a quoted string.

    Only printable 7-bit text is quoted: 8-bit data in a quoted string is
    legal in IMAP4rev2 but not IMAP4rev1, and CR/LF/NUL never are.
    """
    return len(data) <= MAX_QUOTED and _QUOTABLE.fullmatch(data) is not None


def _quote(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _emit(value: Value, out: list[bytes]) -> None:
    """Append the wire form of ``value`` to ``out``.

    Literal data is appended as its own element (the caller's object, not a
    copy) so a 30 MB body is never copied into a joined string here.
    """
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    elif isinstance(value, int):
        out.append(b"%d" % value)
    elif isinstance(value, bytes):
        if quote_safe(value):
            out.append(_quote(value))
        else:
            out.append(b"{%d}\r\n" % len(value))
            out.append(value)
    elif isinstance(value, Atom):
        out.append(value.value.encode("utf-8"))
    elif isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, Literal8):
        out.append(b"~{%d}\r\n" % len(value.data))
        out.append(value.data)
    elif isinstance(value, tuple):
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _emit(item, out)
        out.append(b")")
    else:
        raise TypeError(f"not an IMAP value: {type(value).__name__}")


def coalesce(parts: list[bytes], threshold: int = 4096) -> list[bytes]:
    """Join runs of small elements, keeping large ones (literal data) as is."""
    result: list[bytes] = []
    run: list[bytes] = []
    for part in parts:
        if len(part) >= threshold:
            if run:
                result.append(b"".join(run))
                run = []
            result.append(part)
        else:
            run.append(part)
    if run:
        result.append(b"".join(run))
    return result


def format_value_chunks(value: Value) -> list[bytes]:
    """Server-side wire form of ``value`` as a list of chunks.

    Large literal data stays a separate element, passed through uncopied.
    """
    out: list[bytes] = []
    _emit(value, out)
    return coalesce(out)


def serialize_value(value: Value) -> bytes:
    """Server-side wire form of ``value`` as one bytes object."""
    out: list[bytes] = []
    _emit(value, out)
    return b"".join(out)
