"""Header blocks and header fields found in raw bytes, byte-exact as Dovecot cuts them.

Header fields are found with C-level searches (``re``, ``bytes.find``), so the cost stays
linear in the message size however a field is folded.
"""

from __future__ import annotations

import re
from functools import lru_cache

from imapproxy.message._lines import CRLF, _is_blank

# A blank line that is not the first line: the LF ending the line before it, then [CR]LF.
_BLANK_LINE = re.compile(rb"\n(\r?\n)")
# A line start (after an LF) whose line is not a continuation of the field before it.
_FIELD_START = re.compile(rb"\n(?![ \t])")


def _blank_line(data: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """Start and end of the first empty line at or after the line start ``pos``.

    Searches ``data[pos:end]``; ``(end, end)`` when there is none.
    """
    end = len(data) if end is None else end
    for blank in (b"\n", b"\r\n"):
        if data.startswith(blank, pos, end):
            return pos, pos + len(blank)
    match = _BLANK_LINE.search(data, pos, end)
    return (end, end) if match is None else match.span(1)


def _header_block_end(data: bytes, pos: int) -> int:
    """End of the header block starting at ``pos``, including the empty line if any."""
    return _blank_line(data, pos)[1]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """Split a message into its header block (with the empty line) and its body.

    Without an empty line the whole message is header and the body is empty; Dovecot
    then returns exactly those bytes for ``BODY[HEADER]`` and adds no CRLF, even though
    RFC 3501 6.4.5 describes the header as ending with the blank line.
    """
    end = _header_block_end(raw, 0)
    return raw[:end], raw[end:]


@lru_cache(maxsize=128)
def _name_pattern(wanted: frozenset[bytes]) -> re.Pattern[bytes] | None:
    """A regex finding the lines that start a field named like one in ``wanted``.

    A field's name is its first line up to the first colon without trailing blanks, or
    the whole line without its line end when there is no colon; names compare ASCII
    case-insensitively (``wanted`` is lower case).  Names that no line can produce are
    left out of each alternative.  Group 1 or 2 is the name.
    """
    usable = [n for n in wanted if b":" not in n and b"\n" not in n]
    with_colon = [n for n in usable if not n.endswith((b" ", b"\t"))]
    without_colon = [n for n in usable if not n.endswith(b"\r")]
    if not usable:
        return None

    def alternatives(names: list[bytes]) -> bytes:
        # Longest first, so a name is never cut short by one of its prefixes; an empty
        # list must match nothing (an empty alternation would match the empty name).
        ordered = sorted(names, key=len, reverse=True)
        return b"|".join(re.escape(n) for n in ordered) if ordered else b"(?!)"

    return re.compile(
        rb"^(?:(" + alternatives(with_colon) + rb")[ \t]*:"
        rb"|(" + alternatives(without_colon) + rb")(?=\r*(?:\n|\Z)))",
        re.I | re.M,
    )


def _matching_fields(
    header: bytes, wanted: set[bytes] | frozenset[bytes]
) -> tuple[list[tuple[int, int, bytes]], int]:
    """Spans of the fields named in ``wanted``, in order, and where the fields end.

    The fields end at the first empty line (or the end of data).  Every line that does
    not start with a blank starts a field, and so does the first line; continuation
    lines belong to the field above.  Everything runs as C-level searches, so a huge
    header or a field folded over millions of lines costs linear time.  Each entry is
    ``(start, end, lower-case name)``.
    """
    stop = _blank_line(header, 0)[0]
    pattern = _name_pattern(frozenset(wanted))
    spans: list[tuple[int, int, bytes]] = []
    if pattern is None:
        return spans, stop
    for match in pattern.finditer(header, 0, stop):
        begin = match.start()
        if begin >= stop or (begin > 0 and header[begin] in b" \t"):
            continue  # a continuation line, not a field of its own
        after = _FIELD_START.search(header, begin, stop)
        end = stop if after is None else after.end()
        name = match.group(1) if match.group(1) is not None else match.group(2)
        spans.append((begin, end, name.lower()))
    return spans, stop


def _filter_fields(header: bytes, wanted: set[bytes], negate: bool) -> bytes:
    """The raw fields named in ``wanted`` (or all the others when ``negate``), in order."""
    spans, stop = _matching_fields(header, wanted)
    if not negate:
        return b"".join(header[begin:end] for begin, end, _ in spans)
    kept: list[bytes] = []
    pos = 0
    for begin, end, _ in spans:
        kept.append(header[pos:begin])
        pos = end
    kept.append(header[pos:stop])
    return b"".join(kept)


def _field_value(header: bytes, begin: int, end: int) -> bytes:
    """Everything after the field's first colon, folds included (b"" without one)."""
    colon = header.find(b":", begin, end)
    return b"" if colon < 0 else header[colon + 1 : end]


def _as_crlf(raw: bytes) -> bytes:
    """Force CRLF line ends, as Dovecot's header filter writes them."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", CRLF)


def header_fields(header: bytes, fields: tuple[str, ...], negate: bool) -> bytes:
    """``HEADER.FIELDS (...)`` (or ``.NOT`` when ``negate``) of a header block.

    Matching fields keep their folded lines and their original order; names compare
    case-insensitively.  The result always ends with the blank line, also when nothing
    matched (``b"\\r\\n"``) and when the header itself had none: that is what Dovecot
    sends for HEADER.FIELDS.  (Dovecot's HEADER.FIELDS.NOT of a header without a blank
    line omits it; :func:`extract_section` reproduces that, this function does not.)
    """
    wanted = {name.lower().encode() for name in fields}
    out = _as_crlf(_filter_fields(header, wanted, negate))
    if out and not out.endswith(CRLF):
        out += CRLF
    return out + CRLF


def _has_blank_line(header: bytes) -> bool:
    return header.endswith((b"\n\n", b"\n\r\n")) or _is_blank(header)


def header_value(raw: bytes, name: bytes) -> bytes | None:
    """The first ``name`` field's value, unfolded and stripped (None when absent).

    Used to find a message again by a unique header (Message-ID), so only the
    header block is looked at.
    """
    header, _ = split_header(raw)
    spans, _ = _matching_fields(header, {name.lower()})
    if not spans:
        return None
    begin, end, _ = spans[0]
    return b" ".join(_field_value(header, begin, end).split()) or None
