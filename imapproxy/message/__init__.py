"""Answer IMAP FETCH ``BODY[section]`` requests from a cached raw message.

The proxy keeps each message's ``BODY[]`` bytes and must later serve any section of it
byte-identically to what the upstream (Dovecot 2.3) would have sent, so a client cannot
tell whether it talks to the cache or to the server.  That rules out the stdlib ``email``
package (it re-serialises and normalises) and means the MIME structure is found the way
Dovecot's ``message-parser.c`` finds it, quirks included:

* A header block ends at the first empty line; with no empty line the header is all the
  data up to the end (or up to a boundary line) and the body is empty.
* A boundary line is any line starting with ``--`` + boundary: only the prefix has to
  match (RFC 2046 5.1.1 allows trailing whitespace; Dovecot allows anything).  Every open
  multipart's boundary is live, the longest match wins, ties go to the innermost.
* The CRLF before a boundary line belongs to the boundary, not to the part before it.
  That includes the CRLF of an empty line right before an enclosing boundary: the
  header then ends without its blank line and the body is empty.
* A multipart without a close delimiter runs to the end of the data.
* A boundary that cuts a part's header short leaves that header without its last CRLF,
  which goes to the enclosing parts instead.
* HEADER.FIELDS of the top-level message always ends with a blank line; every other
  HEADER.FIELDS[.NOT] filters the raw bytes from the message start up to the first empty
  line (boundaries not considered) and has a blank line only if one was there.
* Section paths follow Dovecot's ``imap_msgpart_find``: ``N.1`` of a leaf part is the
  part itself, ``1`` of a single-part message is its body, and ``1.MIME`` of a single-part
  message is the message header.

Header fields and boundary lines are found with C-level searches (``re``, ``bytes.find``),
so the cost stays linear in the message size however it is folded or nested.  For several
sections of one message, :class:`ParsedMessage` parses the structure once.

Nothing here does I/O; all functions take and return ``bytes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

__all__ = [
    "ParsedMessage",
    "extract_section",
    "header_fields",
    "header_value",
    "partial",
    "split_header",
]

CRLF = b"\r\n"
# Dovecot truncates longer boundaries (RFC 2046 allows 70 characters).
_BOUNDARY_MAX = 80
# Dovecot stops treating parts as containers below this depth; it also keeps Python's
# recursion limit out of reach of a hostile message.
_MAX_NESTING = 100

_TEXT_SECTIONS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


# --------------------------------------------------------------------------- lines


def _line_end(data: bytes, pos: int) -> int:
    """Offset just past the LF ending the line at ``pos`` (end of data if none)."""
    lf = data.find(b"\n", pos)
    return len(data) if lf < 0 else lf + 1


def _is_blank(line: bytes) -> bool:
    """True for an empty line, the one that ends a header block."""
    return line in (b"\n", b"\r\n")


def _newline_before(data: bytes, pos: int) -> int:
    """Length of the [CR]LF that ends just before ``pos`` (0 if none)."""
    if pos < 1 or data[pos - 1] != 0x0A:
        return 0
    return 2 if pos >= 2 and data[pos - 2] == 0x0D else 1


# --------------------------------------------------------------------------- header


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


# --------------------------------------------------------------------------- content-type

# RFC 2045 token characters as Dovecot's rfc822_parse_mime_token accepts them: atext
# without "/", "=", "?", plus "." and any 8-bit byte.
_TOKEN = frozenset(
    b"!#$%&'*+-.^_`{|}~0123456789"
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" + bytes(range(128, 256))
)


class _Cursor:
    """A tiny RFC 822 tokenizer over a header value, mirroring Dovecot's rules."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def skip_cfws(self) -> bool:
        """Skip whitespace, folds and (nested) comments; False on an unclosed comment."""
        while not self.at_end():
            char = self.peek()
            if char in b" \t\r\n":
                self.pos += 1
            elif char == ord("("):
                if not self._skip_comment():
                    return False
            else:
                break
        return True

    def _skip_comment(self) -> bool:
        depth = 0
        while not self.at_end():
            char = self.peek()
            self.pos += 1
            if char == ord("\\"):
                self.pos += 1
            elif char == ord("("):
                depth += 1
            elif char == ord(")"):
                depth -= 1
                if depth == 0:
                    return True
        return False

    def token(self) -> bytes:
        start = self.pos
        while not self.at_end() and self.peek() in _TOKEN:
            self.pos += 1
        return self.data[start : self.pos]

    def quoted(self) -> bytes | None:
        """A quoted-string's content, unescaped and unfolded; None if unterminated."""
        out = bytearray()
        self.pos += 1
        while not self.at_end():
            char = self.peek()
            self.pos += 1
            if char == ord('"'):
                return bytes(out)
            if char == ord("\\") and not self.at_end() and self.peek() not in b"\r\n":
                out.append(self.peek())
                self.pos += 1
            elif char == ord("\n"):
                if out.endswith(b"\r"):
                    del out[-1]
            else:
                out.append(char)
        return None

    def raw_until_separator(self) -> bytes:
        """Dovecot's workaround for ``name==?utf-8?...``: take up to ``;`` or blank."""
        start = self.pos
        while not self.at_end() and self.peek() not in b"; \t\r\n":
            self.pos += 1
        return self.data[start : self.pos]


def _media_type(cur: _Cursor) -> bytes | None:
    """Parse ``type/subtype``; None if malformed (Dovecot then ignores the header)."""
    cur.skip_cfws()
    main = cur.token()
    cur.skip_cfws()
    if not main or cur.peek() != ord("/"):
        return None
    cur.pos += 1
    cur.skip_cfws()
    sub = cur.token()
    cur.skip_cfws()
    if not sub or not (cur.at_end() or cur.peek() == ord(";")):
        return None
    return (main + b"/" + sub).lower()


def _parameter(cur: _Cursor) -> tuple[bytes, bytes] | None:
    """Parse one ``; name=value`` parameter; None if malformed at the cursor."""
    if cur.peek() != ord(";"):
        return None
    cur.pos += 1
    if not cur.skip_cfws():
        return None
    name = cur.token()
    cur.skip_cfws()
    if not name or cur.peek() != ord("="):
        return None
    cur.pos += 1
    cur.skip_cfws()
    if cur.peek() == ord('"'):
        value = cur.quoted()
        if value is None:
            return None
    elif cur.peek() == ord("="):
        value = cur.raw_until_separator()
    else:
        value = cur.token()
    cur.skip_cfws()
    return name, value


def _boundary(cur: _Cursor) -> bytes | None:
    """Find the ``boundary`` parameter, skipping broken parameters like Dovecot does."""
    while not cur.at_end():
        start = cur.pos
        param = _parameter(cur)
        if param is None:
            cur.pos = start + 1
            continue
        if param[0].lower() == b"boundary":
            return param[1][:_BOUNDARY_MAX]
    return None


@dataclass(frozen=True)
class _ContentType:
    media_type: bytes
    boundary: bytes | None


def _content_type(value: bytes) -> _ContentType | None:
    """Media type and boundary of a Content-Type value."""
    cur = _Cursor(value)
    media_type = _media_type(cur)
    if media_type is None:
        return None
    boundary = _boundary(cur) if media_type.startswith(b"multipart/") else None
    return _ContentType(media_type, boundary)


# --------------------------------------------------------------------------- structure


@dataclass
class _Part:
    """One MIME entity as offsets into the raw message.

    ``start..body_start`` is its header (MIME header, or message header for the root
    and for message/rfc822 contents), ``body_start..end`` its body.  A message/rfc822
    part has the encapsulated message as its only child.
    """

    start: int
    body_start: int = 0
    end: int = 0
    multipart: bool = False
    rfc822: bool = False
    digest: bool = False
    children: list[_Part] = field(default_factory=list)


@dataclass(frozen=True)
class _Boundary:
    """An open multipart's delimiter, ``--`` included."""

    marker: bytes
    owner: _Part


@dataclass(frozen=True)
class _Hit:
    """A boundary line found while scanning.

    ``content_end`` is where the preceding content stops (before the CRLF that belongs
    to the boundary), ``line_end`` where the boundary line ends.
    """

    boundary: _Boundary
    content_end: int
    line_end: int
    closing: bool


class _Stack:
    """The boundaries of all open multiparts, innermost last, with search helpers.

    ``markers`` lets one C-level ``startswith`` test a line against every boundary;
    ``needle`` (LF + the prefix all markers share) finds candidate lines with ``find``,
    so lines that cannot be boundaries are never looked at one by one.
    """

    __slots__ = ("boundaries", "markers", "needle")

    def __init__(self, boundaries: tuple[_Boundary, ...] = ()) -> None:
        self.boundaries = boundaries
        self.markers = tuple(b.marker for b in boundaries)
        prefix = self.markers[0] if self.markers else b""
        for marker in self.markers[1:]:
            while not marker.startswith(prefix):
                prefix = prefix[:-1]
        self.needle = b"\n" + prefix

    def push(self, boundary: _Boundary) -> _Stack:
        return _Stack((*self.boundaries, boundary))

    def match(self, data: bytes, pos: int) -> _Boundary | None:
        """The boundary the line at ``pos`` starts with: longest wins, ties to innermost."""
        if not self.markers or not data.startswith(self.markers, pos):
            return None
        best: _Boundary | None = None
        for candidate in reversed(self.boundaries):
            if data.startswith(candidate.marker, pos) and (
                best is None or len(candidate.marker) > len(best.marker)
            ):
                best = candidate
        return best

    def find(self, data: bytes, pos: int, limit: int) -> tuple[int, _Boundary] | None:
        """The first boundary line starting in ``[pos, limit)``; ``pos`` is a line start."""
        if not self.markers or pos >= limit:
            return None
        boundary = self.match(data, pos)
        if boundary is not None:
            return pos, boundary
        # A candidate LF at i puts its line at i + 1, which must stay below limit.
        end = limit + len(self.needle) - 2
        while (lf := data.find(self.needle, pos, end)) >= 0:
            pos = lf + 1
            boundary = self.match(data, pos)
            if boundary is not None:
                return pos, boundary
        return None


_NO_BOUNDARIES = _Stack()


def _hit_at(data: bytes, pos: int, region_start: int, boundary: _Boundary) -> _Hit:
    """Describe the boundary line at ``pos`` found in a region beginning at ``region_start``."""
    after = pos + len(boundary.marker)
    content_end = pos if pos == region_start else pos - _newline_before(data, pos)
    return _Hit(boundary, content_end, _line_end(data, pos), data.startswith(b"--", after))


def _scan(data: bytes, pos: int, stack: _Stack) -> _Hit | None:
    """Find the first boundary line at or after ``pos`` (a line start)."""
    found = stack.find(data, pos, len(data))
    if found is None:
        return None
    return _hit_at(data, found[0], pos, found[1])


@dataclass
class _HeaderInfo:
    end: int
    hit: _Hit | None
    content_type: _ContentType | None
    seen_type: bool
    is_mime: bool
    blank_line: bool = False


def _parse_header(data: bytes, pos: int, stack: _Stack, is_mime: bool) -> _HeaderInfo:
    """Read a header block; a boundary line cuts it short (its CRLF then goes too)."""
    start = pos
    blank_start, blank_end = _blank_line(data, pos)
    found = stack.find(data, pos, blank_start)
    if found is not None:
        hit = _hit_at(data, found[0], start, found[1])
        return _header_info(data[start : hit.content_end], hit.content_end, hit, is_mime)
    info = _header_info(data[start:blank_end], blank_end, None, is_mime)
    info.blank_line = blank_end > blank_start
    return info


def _boundary_after_blank_line(
    data: bytes, start: int, info: _HeaderInfo, stack: _Stack, own: bytes | None
) -> _Hit | None:
    """An enclosing boundary line right after the header's empty line, if any.

    The empty line's newline is then the one before the boundary line, which belongs to
    the boundary: the header ends without it and the body is empty, as if the boundary
    had cut the header short.  A multipart's own boundary is live there too (longest
    match wins, ties to it as the innermost) and leaves the header alone.
    """
    if info.hit is not None or not info.blank_line:
        return None
    boundary = stack.match(data, info.end)
    if boundary is None:
        return None
    own_wins = own is not None and len(own) + 2 >= len(boundary.marker)
    if own_wins and data.startswith(b"--" + (own or b""), info.end):
        return None
    return _hit_at(data, info.end, start, boundary)


_STRUCTURE_FIELDS = frozenset({b"content-type", b"mime-version"})


def _header_info(header: bytes, end: int, hit: _Hit | None, is_mime: bool) -> _HeaderInfo:
    """Pick what structure needs from a header: the first Content-Type, MIME-ness."""
    content_type: _ContentType | None = None
    seen_type = False
    spans, _ = _matching_fields(header, _STRUCTURE_FIELDS)
    for field_start, field_end, name in spans:
        is_mime = True
        if name == b"content-type" and not seen_type:
            seen_type = True
            content_type = _content_type(_field_value(header, field_start, field_end))
    return _HeaderInfo(end, hit, content_type, seen_type, is_mime)


def _classify(part: _Part, info: _HeaderInfo, in_digest: bool) -> bytes | None:
    """Set the part's kind from its header; return the boundary if it is a multipart."""
    ctype = info.content_type if info.is_mime else None
    if ctype is None:
        # Without a (usable) Content-Type a part is text/plain, except in a digest.
        part.rfc822 = in_digest and not info.seen_type
        return None
    part.rfc822 = ctype.media_type == b"message/rfc822"
    part.multipart = ctype.media_type.startswith(b"multipart/")
    part.digest = ctype.media_type == b"multipart/digest"
    return ctype.boundary if part.multipart else None


def _parse_part(
    data: bytes, start: int, stack: _Stack, is_mime: bool, in_digest: bool, depth: int
) -> tuple[_Part, _Hit | None]:
    """Parse one entity; return it and the boundary line that ended it (None at EOF)."""
    part = _Part(start)
    info = _parse_header(data, start, stack, is_mime)
    part.body_start = part.end = info.end
    boundary = _classify(part, info, in_digest)
    if depth >= _MAX_NESTING:
        part.multipart = part.rfc822 = False
        boundary = None
    cut = _boundary_after_blank_line(data, start, info, stack, boundary)
    if cut is not None:
        info = replace(info, end=cut.content_end, hit=cut)
        part.body_start = part.end = info.end
    if info.hit is not None:
        if part.rfc822:
            # Dovecot still opens the encapsulated message, empty, at the boundary.
            part.children.append(_Part(info.end, info.end, info.end))
        return part, _newline_to_ancestors(data, info.hit)
    if boundary is not None:
        hit = _parse_multipart_body(data, part, stack, boundary, depth)
    elif part.rfc822:
        child, hit = _parse_part(data, part.body_start, stack, False, False, depth + 1)
        part.children.append(child)
    else:
        hit = _scan(data, part.body_start, stack)
    part.end = len(data) if hit is None else hit.content_end
    return part, hit


def _newline_to_ancestors(data: bytes, hit: _Hit) -> _Hit:
    """A boundary that cuts a header short hands its CRLF to the part's parent.

    Dovecot moves that CRLF out of the cut header into the parent's body, so every
    enclosing part (a message/rfc822 part, say) ends after it, not before it.
    """
    line_start = hit.content_end + _newline_after(data, hit.content_end)
    return replace(hit, content_end=line_start)


def _newline_after(data: bytes, pos: int) -> int:
    """Length of the [CR]LF starting at ``pos`` (0 if none)."""
    if data.startswith(CRLF, pos):
        return 2
    return 1 if data.startswith(b"\n", pos) else 0


def _parse_multipart_body(
    data: bytes, part: _Part, stack: _Stack, boundary: bytes, depth: int
) -> _Hit | None:
    """Parse preamble, children and epilogue; return the hit that ends the multipart."""
    own = _Boundary(b"--" + boundary, part)
    inner = stack.push(own)
    hit = _scan(data, part.body_start, inner)
    while hit is not None and hit.boundary is own and not hit.closing:
        child, hit = _parse_part(data, hit.line_end, inner, True, part.digest, depth + 1)
        part.children.append(child)
    if hit is not None and hit.boundary is own:
        return _scan(data, hit.line_end, stack)
    return hit


def _structure(raw: bytes) -> _Part:
    """The MIME tree of a whole message."""
    root, _ = _parse_part(raw, 0, _NO_BOUNDARIES, False, False, 0)
    return root


# --------------------------------------------------------------------------- sections


def _find(root: _Part, path: tuple[int, ...]) -> _Part | None:
    """Resolve a part number path the way Dovecot's imap_msgpart_find does."""
    part: _Part | None = root
    for index, num in enumerate(path):
        if part is None:
            return None
        more = index + 1 < len(path)
        if part.multipart:
            part = part.children[num - 1] if 0 < num <= len(part.children) else None
        elif num != 1 or (more and not part.rfc822):
            return None
        if part is not None and part.rfc822 and more:
            part = part.children[0]
    return part


def _slice_header(raw: bytes, part: _Part) -> bytes:
    return raw[part.start : part.body_start]


def _slice_body(raw: bytes, part: _Part) -> bytes:
    return raw[part.body_start : part.end]


def _fields_of(
    raw: bytes, message: _Part, fields: tuple[str, ...], negate: bool, top_level: bool
) -> bytes:
    """HEADER.FIELDS[.NOT] of a message, matching Dovecot's two code paths.

    The top-level HEADER.FIELDS comes from Dovecot's cache: every line CRLF-terminated,
    the blank line always added (that is :func:`header_fields`).  Everything else runs
    Dovecot's header filter over the raw stream from the message's start to the first
    empty line, ignoring MIME boundaries: an unterminated last line stays so, and the
    blank line is only there if the stream had one.
    """
    header = raw[message.start : _header_block_end(raw, message.start)]
    if top_level and not negate:
        return header_fields(header, fields, negate=False)
    wanted = {name.lower().encode() for name in fields}
    kept = _filter_fields(header, wanted, negate)
    return _as_crlf(kept) + (CRLF if _has_blank_line(header) else b"")


def _has_blank_line(header: bytes) -> bool:
    return header.endswith((b"\n\n", b"\n\r\n")) or _is_blank(header)


def _message_text(
    raw: bytes, message: _Part, text: str, fields: tuple[str, ...], top_level: bool
) -> bytes:
    """HEADER / HEADER.FIELDS[.NOT] / TEXT of a message (the root or an rfc822 body)."""
    if text == "HEADER":
        return _slice_header(raw, message)
    if text == "TEXT":
        return _slice_body(raw, message)
    return _fields_of(raw, message, fields, text == "HEADER.FIELDS.NOT", top_level)


class ParsedMessage:
    """A raw message whose MIME structure is parsed once and then cut many times.

    A FETCH often asks for several sections of one message (``BODY.PEEK[1]
    BODY.PEEK[2] BODY.PEEK[1.MIME]``); build one ``ParsedMessage`` and call
    :meth:`section` for each.  The structure is parsed on the first section that needs
    it (the whole message and its top-level HEADER/TEXT/HEADER.FIELDS do not).
    """

    __slots__ = ("_root", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._root: _Part | None = None

    def _structure(self) -> _Part:
        if self._root is None:
            self._root = _structure(self.raw)
        return self._root

    def section(
        self, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()
    ) -> bytes | None:
        """The bytes of ``BODY[<part>.<text> (<fields>)]``: see :func:`extract_section`."""
        upper = None if text is None else text.upper()
        if upper is not None and upper not in _TEXT_SECTIONS:
            raise ValueError(f"unknown section text {text!r}")
        if any(num < 1 for num in part):
            raise ValueError(f"part numbers start at 1: {part!r}")
        raw = self.raw
        if not part:
            if upper is None:
                return raw
            if upper == "MIME":
                raise ValueError("MIME needs a part number (Dovecot answers BAD)")
            # The top-level header ends at the first empty line whatever the structure.
            root = _Part(0, _header_block_end(raw, 0), len(raw))
            return _message_text(raw, root, upper, fields, top_level=True)
        found = _find(self._structure(), part)
        if found is None:
            return None
        if upper is None:
            return _slice_body(raw, found)
        if upper == "MIME":
            return _slice_header(raw, found)
        if not found.rfc822:
            return None
        return _message_text(raw, found.children[0], upper, fields, top_level=False)


def extract_section(
    raw: bytes, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()
) -> bytes | None:
    """The bytes of ``BODY[<part>.<text> (<fields>)]`` for a raw message.

    ``part`` is the part number path (``()`` for the whole message), ``text`` one of
    None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME; ``fields`` the field
    names for the HEADER.FIELDS forms.  ``MIME`` without a part number is a syntax
    error (ValueError; Dovecot answers BAD).  Returns None when the part does not
    exist, including HEADER/TEXT of a part that is not message/rfc822.  RFC 3501 leaves
    that answer open; Dovecot sends an empty string, so the caller should answer
    ``BODY[...] ""`` to match it.

    Each call parses the message's structure again: for several sections of one
    message use :class:`ParsedMessage`.
    """
    return ParsedMessage(raw).section(part, text, fields)


def partial(data: bytes, start: int, length: int | None) -> bytes:
    """``<start.length>`` of a section: the bytes from ``start``, at most ``length``.

    A start at or beyond the end gives the empty string (RFC 3501 6.4.5), never NIL.
    """
    if start < 0 or (length is not None and length < 0):
        raise ValueError("partial offsets must not be negative")
    if length is None:
        return data[start:]
    return data[start : start + length]


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
