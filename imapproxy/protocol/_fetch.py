"""FETCH attributes (``BODY.PEEK[1.HEADER]<0.100>``) and FETCH response items."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import ParseError
from ._values import Atom, Value

__all__ = [
    "FETCH_MACROS",
    "SIMPLE_FETCH_NAMES",
    "FetchAttribute",
    "Section",
    "fetch_items",
    "parse_fetch_attribute",
]

SECTION_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")

#: Fetch items that take no section.
SIMPLE_FETCH_NAMES = frozenset(
    {
        "UID",
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "MODSEQ",
        "EMAILID",
        "THREADID",
        "SAVEDATE",
    }
)

_SECTIONED = re.compile(
    r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\]"
    r"(?:<(\d+)\.(\d+)>)?\Z",
    re.IGNORECASE,
)
_PART = re.compile(r"[1-9]\d*(?:\.[1-9]\d*)*")
_FIELD_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s()"]+))')
_FIELD_ATOM = re.compile(r"[!#-'*-~]+\Z")


@dataclass(frozen=True, slots=True)
class Section:
    """The part inside ``BODY[...]``: ``part`` numbers, then ``text``.

    ``text`` is None, ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``,
    ``TEXT`` or ``MIME``; ``fields`` (upper-cased) go with HEADER.FIELDS[.NOT].
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            names = (f if _FIELD_ATOM.match(f) else _quote(f) for f in self.fields)
            out += " (" + " ".join(names) + ")"
        return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One FETCH data item a client asked for.

    ``name`` is upper-cased and never contains ``.PEEK``: BODY.PEEK[...] is
    ``FetchAttribute("BODY", section, peek=True)``. ``BODY`` without a section
    is the non-extensible BODYSTRUCTURE. ``partial`` is ``(origin, count)``.
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    def response_name(self) -> str:
        """The item name in the server's FETCH response (no .PEEK, ``<origin>``)."""
        if self.section is None:
            return self.name
        out = f"{self.name}[{self.section}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}>"
        return out

    def command_name(self) -> str:
        """The item as a client writes it in a FETCH command."""
        if self.section is None:
            return self.name
        name = self.name + (".PEEK" if self.peek else "")
        out = f"{name}[{self.section}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}.{self.partial[1]}>"
        return out


FETCH_MACROS: dict[str, tuple[FetchAttribute, ...]] = {
    "FAST": tuple(FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
    "ALL": tuple(FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
    "FULL": tuple(
        FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
    ),
}


def _parse_fields(text: str) -> tuple[str, ...]:
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise ParseError("invalid header field list")
    inner = text[1:-1]
    fields: list[str] = []
    pos = 0
    while pos < len(inner):
        if not inner[pos:].strip():
            break
        m = _FIELD_TOKEN.match(inner, pos)
        if not m:
            raise ParseError("invalid header field list")
        name = m.group(2) if m.group(2) is not None else re.sub(r"\\(.)", r"\1", m.group(1))
        if not name:
            raise ParseError("empty header field name")
        fields.append(name.upper())
        pos = m.end()
    if not fields:
        raise ParseError("empty header field list")
    return tuple(fields)


def _parse_section(text: str, binary: bool) -> Section:
    m = _PART.match(text)
    part: tuple[int, ...] = ()
    rest = text
    if m:
        part = tuple(int(p) for p in m.group(0).split("."))
        rest = text[m.end() :]
        if rest:
            if not rest.startswith("."):
                raise ParseError("invalid section")
            rest = rest[1:]
    if binary:
        if rest:
            raise ParseError("invalid BINARY section")
        return Section(part)
    if not rest:
        return Section(part)
    head, _, tail = rest.partition(" ")
    head = head.upper()
    if head not in SECTION_TEXTS or (head == "MIME" and not part):
        raise ParseError("invalid section")
    if head in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return Section(part, head, _parse_fields(tail))
    if tail.strip():
        raise ParseError("invalid section")
    return Section(part, head)


def parse_fetch_attribute(text: str) -> FetchAttribute:
    """Parse one fetch item as a client sends it (macros are not items)."""
    upper = text.upper()
    if upper in SIMPLE_FETCH_NAMES:
        return FetchAttribute(upper)
    m = _SECTIONED.match(text)
    if not m:
        raise ParseError("invalid fetch attribute")
    name = m.group(1).upper()
    peek = name.endswith(".PEEK")
    if peek:
        name = name[: -len(".PEEK")]
    section = _parse_section(m.group(2), binary=name != "BODY")
    partial = None
    if m.group(3) is not None:
        if name == "BINARY.SIZE":
            raise ParseError("BINARY.SIZE takes no partial")
        count = int(m.group(4))
        if count == 0:
            raise ParseError("partial count must be positive")
        partial = (int(m.group(3)), count)
    return FetchAttribute(name, section, partial, peek)


def fetch_items(values: tuple[Value, ...]) -> dict[str, Value]:
    """Map a FETCH response's list to ``{UPPER-CASED item name: value}``."""
    if len(values) % 2:
        raise ParseError("odd number of items in FETCH response")
    items: dict[str, Value] = {}
    for i in range(0, len(values), 2):
        name = values[i]
        if not isinstance(name, Atom):
            raise ParseError("FETCH item name is not an atom")
        items[name.value.upper()] = values[i + 1]
    return items
