"""SEARCH criteria as a tree of :class:`SearchKey`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from ._args import Args, astring_bytes
from ._dates import format_date, parse_date
from ._errors import ParseError
from ._seqset import parse_sequence_set
from ._values import Atom, Value

__all__ = ["SearchKey", "criteria_values", "parse_search_keys", "search_key_values"]

FLAG_KEYS = frozenset(
    [
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
    ]
)
DATE_KEYS = frozenset(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"])
NUMBER_KEYS = frozenset(["LARGER", "SMALLER", "OLDER", "YOUNGER"])
KEYWORD_KEYS = frozenset(("KEYWORD", "UNKEYWORD"))
STRING_KEYS = frozenset(["FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"])
#: RFC 8474 object ids are atoms; kept as str like keywords.
OBJECTID_KEYS = frozenset(("EMAILID", "THREADID"))


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One search key; ``AND`` holds the top level and each ``(...)`` group.

    ``args`` by key: dates carry ``datetime.date``; LARGER/SMALLER/OLDER/
    YOUNGER an int; KEYWORD/UNKEYWORD a str; FROM..TEXT bytes; HEADER
    ``(field, value)`` bytes; SEQ/UID a SequenceSet; NOT one key; OR two;
    MODSEQ ``(modseq,)`` or ``(entry_name, entry_type, modseq)``.
    """

    name: str
    args: tuple[Any, ...] = ()


def _date_arg(value: Value) -> datetime.date:
    if isinstance(value, Atom):
        return parse_date(value.value)
    if isinstance(value, bytes):
        return parse_date(value.decode("ascii", "replace"))
    raise ParseError("expected date")


def _parse_key(args: Args, depth: int) -> SearchKey:
    if depth > 50:
        raise ParseError("search criteria nested too deeply")
    value = args.next("search key")
    if isinstance(value, tuple):
        if not value:
            raise ParseError("empty search group")
        return _parse_group(list(value), depth + 1)
    if not isinstance(value, Atom):
        raise ParseError("expected search key")
    name = value.value.upper()
    if name in FLAG_KEYS:
        return SearchKey(name)
    if name in DATE_KEYS:
        return SearchKey(name, (_date_arg(args.next("date")),))
    if name in NUMBER_KEYS:
        return SearchKey(name, (args.number(),))
    if name in KEYWORD_KEYS or name in OBJECTID_KEYS:
        return SearchKey(name, (args.atom("keyword"),))
    if name in STRING_KEYS:
        return SearchKey(name, (args.astring(),))
    if name == "HEADER":
        return SearchKey(name, (args.astring("header name"), args.astring()))
    if name == "UID":
        return SearchKey(name, (args.sequence_set(),))
    if name == "NOT":
        return SearchKey(name, (_parse_key(args, depth + 1),))
    if name == "OR":
        return SearchKey(name, (_parse_key(args, depth + 1), _parse_key(args, depth + 1)))
    if name == "MODSEQ":
        nxt = args.peek()
        if isinstance(nxt, bytes):
            entry = args.astring()
            kind = args.atom("entry type").lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError("invalid MODSEQ entry type")
            return SearchKey(name, (entry, kind, args.number("mod-sequence")))
        return SearchKey(name, (args.number("mod-sequence"),))
    if value.value == "$" or value.value[:1] in "0123456789*":
        return SearchKey("SEQ", (parse_sequence_set(value.value),))
    raise ParseError("unknown search key")


def _parse_group(values: list[Value], depth: int) -> SearchKey:
    args = Args(values)
    keys = []
    while not args.at_end():
        keys.append(_parse_key(args, depth))
    return SearchKey("AND", tuple(keys))


def parse_search_keys(values: list[Value]) -> SearchKey:
    """Parse the search keys of a SEARCH command into an AND key."""
    if not values:
        raise ParseError("missing search criteria")
    return _parse_group(values, 0)


def search_key_values(key: SearchKey) -> list[Value]:
    """The values a client writes for ``key`` (a nested AND becomes a group)."""
    name, a = key.name, key.args
    if name == "AND":
        inner: list[Value] = []
        for k in a:
            inner.extend(search_key_values(k))
        return [tuple(inner)]
    if name == "NOT":
        return [Atom("NOT"), *search_key_values(a[0])]
    if name == "OR":
        return [Atom("OR"), *search_key_values(a[0]), *search_key_values(a[1])]
    if name == "SEQ":
        return [Atom(str(a[0]))]
    if name == "UID":
        return [Atom("UID"), Atom(str(a[0]))]
    if name in DATE_KEYS:
        return [Atom(name), Atom(format_date(a[0]))]
    if name in NUMBER_KEYS:
        return [Atom(name), Atom(str(a[0]))]
    if name in KEYWORD_KEYS or name in OBJECTID_KEYS:
        return [Atom(name), Atom(a[0])]
    if name in STRING_KEYS:
        return [Atom(name), astring_bytes(a[0])]
    if name == "HEADER":
        return [Atom(name), a[0], a[1]]
    if name == "MODSEQ":
        if len(a) == 3:
            return [Atom(name), a[0], Atom(a[1]), Atom(str(a[2]))]
        return [Atom(name), Atom(str(a[0]))]
    if name in FLAG_KEYS:
        return [Atom(name)]
    raise ValueError(f"unknown search key {name}")


def criteria_values(criteria: SearchKey) -> list[Value]:
    """Values for a whole criteria: the top-level AND is written without parens."""
    if criteria.name == "AND" and criteria.args:
        out: list[Value] = []
        for k in criteria.args:
            out.extend(search_key_values(k))
        return out
    return search_key_values(criteria)
