"""The MIME structure parser: a message's tree of parts as offsets into its bytes.

The structure is found the way Dovecot's ``message-parser.c`` finds it, quirks included
(see the package docstring for the rules).  Boundary lines are found with ``bytes.find``
over a shared prefix, so the cost stays linear however deeply the message is nested.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from imapproxy.message._content_type import _content_type, _ContentType
from imapproxy.message._header import _blank_line, _field_value, _matching_fields
from imapproxy.message._lines import _line_end, _newline_after, _newline_before

# Dovecot stops treating parts as containers below this depth; it also keeps Python's
# recursion limit out of reach of a hostile message.
_MAX_NESTING = 100


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
