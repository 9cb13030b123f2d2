"""Server responses: dataclasses, parser and serializer.

Status responses carry free text after an optional ``[code]``; everything
else is an UntaggedData whose values are the generic :data:`Value` model, so
the proxy can pass through extensions it does not understand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from ._errors import ParseError
from ._fetch_raw import read_fetch_attributes, read_list_entry
from ._lexer import END, Scanner
from ._values import Raw, Value, _emit, coalesce

__all__ = [
    "STATUS_NAMES",
    "ContinuationRequest",
    "Response",
    "ResponseCode",
    "TaggedResponse",
    "UntaggedData",
    "UntaggedStatus",
    "format_response",
    "is_text_line",
    "parse_response",
]

STATUS_NAMES = frozenset(("OK", "NO", "BAD", "BYE", "PREAUTH"))
_TAGGED_STATUS = frozenset(("OK", "NO", "BAD"))


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """``[NAME args...]``; sequence sets stay atoms (use parse_sequence_set)."""

    name: str
    args: tuple[Value, ...] = ()


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    """``+ text``: the server wants a literal or SASL data."""

    text: bytes = b""


@dataclass(frozen=True, slots=True)
class TaggedResponse:
    tag: str
    status: str
    code: ResponseCode | None
    text: str


@dataclass(frozen=True, slots=True)
class UntaggedStatus:
    """``* OK/NO/BAD/BYE/PREAUTH [code] text``."""

    status: str
    code: ResponseCode | None
    text: str


@dataclass(frozen=True, slots=True)
class UntaggedData:
    """Any other untagged response: ``* [number] NAME values...``."""

    number: int | None
    name: str
    values: tuple[Value, ...] = ()


Response: TypeAlias = ContinuationRequest | TaggedResponse | UntaggedStatus | UntaggedData

_WORD = re.compile(rb"[^ ]+")
_CODE_NAME = re.compile(rb"[^\x00-\x20\x7f\[\]()\"{]+")
_TEXT_LINE = re.compile(rb"(?:\+|[^ ]+ (?:OK|NO|BAD|BYE|PREAUTH)(?: |\Z))", re.IGNORECASE)


#: The head of an untagged FETCH, the response a message list is made of: read in one
#: match. What it does not take (another spelling of FETCH) goes word by word.
_FETCH_HEAD = re.compile(rb"\* ([0-9]{1,10}) FETCH(?= )")


def is_text_line(first: bytes) -> bool:
    """True for lines whose tail is free text (a trailing ``{n}`` is not a literal)."""
    return bool(_TEXT_LINE.match(first))


def _word(text: bytes, pos: int) -> tuple[str, int]:
    m = _WORD.match(text, pos)
    if not m:
        raise ParseError("malformed response")
    return m.group(0).decode("utf-8", "replace"), m.end()


def _parse_code(text: bytes, pos: int) -> tuple[ResponseCode | None, int]:
    """Parse ``[...]`` at ``pos``; lenient: odd arguments become one Raw."""
    close = text.find(b"]", pos)
    if close < 0:
        return None, pos
    m = _CODE_NAME.match(text, pos + 1)
    if not m:
        return ResponseCode("", (Raw(text[pos + 1 : close]),)), close + 1
    name = m.group(0).decode("utf-8", "replace").upper()
    after = m.end()
    if text[after : after + 1] == b"]":
        return ResponseCode(name), after + 1
    try:
        scanner = Scanner([text], numbers=True, pos=after)
        scanner.code_mode = True
        args: list[Value] = []
        while True:
            item = scanner.read_value()
            if item is END:
                break
            args.append(item)  # type: ignore[arg-type]
        if scanner.peek_char() != 0x5D:
            raise ParseError("unterminated response code")
        return ResponseCode(name, tuple(args)), scanner.pos + 1
    except ParseError:
        raw = text[after:close].strip(b" ")
        return ResponseCode(name, (Raw(raw),) if raw else ()), close + 1


def _status_tail(text: bytes, pos: int) -> tuple[ResponseCode | None, str]:
    if text[pos : pos + 1] == b" ":
        pos += 1
    code = None
    if text[pos : pos + 1] == b"[":
        code, pos = _parse_code(text, pos)
        if code is not None and text[pos : pos + 1] == b" ":
            pos += 1
    return code, text[pos:].decode("utf-8", "replace")


def parse_response(
    parts: list[bytes], max_depth: int = 256, raw_fetch_items: frozenset[str] = frozenset()
) -> Response:
    """Parse one response given as line segments and literals (see ``_lexer``).

    ``raw_fetch_items``: FETCH items (such as ENVELOPE) whose values are kept as the
    server's bytes (``Raw``) where they can be passed on unchanged (``_fetch_raw``)."""
    first = parts[0]
    if raw_fetch_items and (head := _FETCH_HEAD.match(first)) is not None:
        return _fetch(parts, head.end(), int(head.group(1)), max_depth, raw_fetch_items)
    if first[:1] == b"+":
        if len(parts) > 1:
            raise ParseError("literal in continuation request")
        return ContinuationRequest(first[2:] if first[1:2] == b" " else first[1:])
    tag, pos = _word(first, 0)
    if first[pos : pos + 1] != b" ":
        raise ParseError("malformed response")
    if tag != "*":
        status, pos = _word(first, pos + 1)
        status = status.upper()
        if status not in _TAGGED_STATUS or len(parts) > 1:
            raise ParseError("malformed tagged response")
        code, text = _status_tail(first, pos)
        return TaggedResponse(tag, status, code, text)
    word, pos = _word(first, pos + 1)
    number = None
    if word.isdigit():
        number = int(word)
        if first[pos : pos + 1] != b" ":
            raise ParseError("malformed untagged response")
        word, pos = _word(first, pos + 1)
    name = word.upper()
    if number is None and name in STATUS_NAMES:
        if len(parts) > 1:
            raise ParseError("literal in status response")
        code, text = _status_tail(first, pos)
        return UntaggedStatus(name, code, text)
    if name == "FETCH" and raw_fetch_items and number is not None:
        return _fetch(parts, pos, number, max_depth, raw_fetch_items)
    try:
        values = Scanner(parts, numbers=True, max_depth=max_depth, pos=pos).read_all()
    except ParseError:
        if name in _STRUCTURED or len(parts) > 1:
            raise
        return UntaggedData(number, name, (Raw(first[pos:].strip(b" ")),))
    if name == "FETCH" and (number is None or len(values) != 1 or not isinstance(values[0], tuple)):
        raise ParseError("malformed FETCH response")
    return UntaggedData(number, name, tuple(values))


def _fetch(
    parts: list[bytes], pos: int, number: int, max_depth: int, raw_fetch_items: frozenset[str]
) -> UntaggedData:
    """An untagged FETCH whose attribute list starts at pos (_fetch_raw's shortcuts)."""
    if len(parts) == 1:
        entry = read_list_entry(parts[0], pos, raw_fetch_items, max_depth)
        if entry is not None:
            return UntaggedData(number, "FETCH", (entry,))
    scanner = Scanner(parts, numbers=True, max_depth=max_depth, pos=pos)
    attributes = read_fetch_attributes(scanner, raw_fetch_items)
    if not scanner.at_end():
        raise ParseError("malformed FETCH response")
    return UntaggedData(number, "FETCH", (attributes,))


#: Responses whose syntax we rely on; anything else falls back to Raw on error.
_STRUCTURED = frozenset(
    [
        "FETCH",
        "EXISTS",
        "EXPUNGE",
        "RECENT",
        "FLAGS",
        "LIST",
        "LSUB",
        "STATUS",
        "SEARCH",
        "ESEARCH",
        "CAPABILITY",
        "ENABLED",
        "ID",
        "NAMESPACE",
        "VANISHED",
    ]
)


def _code_chunks(code: ResponseCode, out: list[bytes]) -> None:
    out.append(b"[" + code.name.encode("utf-8"))
    for arg in code.args:
        out.append(b" ")
        _emit(arg, out)
    out.append(b"]")


def format_response(resp: Response) -> list[bytes]:
    """Wire form of a response; literal data stays separate, uncopied elements."""
    out: list[bytes] = []
    if isinstance(resp, ContinuationRequest):
        return [b"+ " + resp.text + b"\r\n"]
    if isinstance(resp, (TaggedResponse, UntaggedStatus)):
        head = resp.tag if isinstance(resp, TaggedResponse) else "*"
        out.append(f"{head} {resp.status}".encode())
        if resp.code is not None:
            out.append(b" ")
            _code_chunks(resp.code, out)
        if resp.text:
            out.append(b" " + resp.text.encode("utf-8"))
    elif isinstance(resp, UntaggedData):
        if resp.number is None:
            out.append(b"* " + resp.name.encode("utf-8"))
        else:
            out.append(b"* %d " % resp.number + resp.name.encode("utf-8"))
        for value in resp.values:
            out.append(b" ")
            _emit(value, out)
    else:
        raise TypeError(f"not a response: {type(resp).__name__}")
    out.append(b"\r\n")
    return coalesce(out)
