"""SORT, THREAD (RFC 5256, with ESORT's RETURN of RFC 5267) and COMPRESS (RFC 4978)."""

from __future__ import annotations

from dataclasses import dataclass

from ._args import Args, astring_str
from ._errors import ParseError
from ._search import SearchKey, parse_search_keys
from ._values import Atom

__all__ = [
    "SORT_KEYS",
    "THREAD_ALGORITHMS",
    "Compress",
    "Sort",
    "Thread",
    "parse_compress",
    "parse_sort",
    "parse_thread",
]

SORT_KEYS = frozenset(
    ["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"]
)
THREAD_ALGORITHMS = frozenset(["ORDEREDSUBJECT", "REFERENCES"])
#: RFC 4731 / RFC 5182 result options that SORT accepts (RFC 5267 §3).
SORT_RETURN_OPTIONS = frozenset(["MIN", "MAX", "COUNT", "ALL", "SAVE"])


@dataclass(frozen=True, slots=True)
class Sort:
    """SORT / UID SORT; ``program`` is ``((key, reverse), ...)``; ``return_options`` None
    is a classic SORT (``* SORT`` answer), a tuple an ESORT one (``* ESEARCH``)."""

    tag: str
    uid: bool
    program: tuple[tuple[str, bool], ...]
    charset: str
    criteria: SearchKey
    return_options: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Thread:
    tag: str
    uid: bool
    algorithm: str
    charset: str
    criteria: SearchKey


@dataclass(frozen=True, slots=True)
class Compress:
    tag: str
    mechanism: str


def _program(value: object) -> tuple[tuple[str, bool], ...]:
    if not isinstance(value, tuple) or not value:
        raise ParseError("expected sort criteria")
    program: list[tuple[str, bool]] = []
    reverse = False
    for item in value:
        if not isinstance(item, Atom):
            raise ParseError("invalid sort criterion")
        name = item.value.upper()
        if name == "REVERSE" and not reverse:
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise ParseError("unknown sort criterion")
        program.append((name, reverse))
        reverse = False
    if reverse:
        raise ParseError("REVERSE without a sort key")
    return tuple(program)


def parse_sort(tag: str, uid: bool, args: Args) -> Sort:
    options: tuple[str, ...] | None = None
    if args.peek_atom() == "RETURN":
        args.next()
        value = args.next("return options")
        if not isinstance(value, tuple) or not all(isinstance(v, Atom) for v in value):
            raise ParseError("invalid return options")
        options = tuple(v.value.upper() for v in value)  # type: ignore[union-attr]
        if not set(options) <= SORT_RETURN_OPTIONS:
            raise ParseError("unknown return option")
    program = _program(args.next("sort criteria"))
    charset = astring_str(args.next("charset"), "charset")
    criteria = parse_search_keys(args.values[args.pos :])
    return Sort(tag, uid, program, charset, criteria, options)


def parse_thread(tag: str, uid: bool, args: Args) -> Thread:
    algorithm = args.atom("thread algorithm").upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise ParseError("unknown thread algorithm")
    charset = astring_str(args.next("charset"), "charset")
    criteria = parse_search_keys(args.values[args.pos :])
    return Thread(tag, uid, algorithm, charset, criteria)


def parse_compress(tag: str, args: Args) -> Compress:
    mechanism = args.atom("compression mechanism").upper()
    args.end()
    return Compress(tag, mechanism)
