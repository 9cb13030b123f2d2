"""Sequence sets (``1:3,7,9:*``) and the SEARCHRES saved result ``$``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import ParseError, ProtocolError

__all__ = ["MAX_NUMBER", "SequenceSet", "parse_sequence_set"]

#: Sequence numbers and UIDs are 32-bit unsigned (``nz-number``).
MAX_NUMBER = 0xFFFFFFFF

_SEQ = re.compile(
    r"(?:[1-9]\d*|\*)(?::(?:[1-9]\d*|\*))?(?:,(?:[1-9]\d*|\*)(?::(?:[1-9]\d*|\*))?)*\Z"
)

Bound = int | None


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A set of message numbers or UIDs as written on the wire.

    Each range is ``(first, last)``; ``None`` stands for ``*``; a single number
    is ``(n, n)``. Ranges are kept as sent (unsorted, ``m:n`` not swapped) so
    formatting gives back the client's text. ``saved`` is the ``$`` of RFC
    5182 and has no ranges.
    """

    ranges: tuple[tuple[Bound, Bound], ...]
    saved: bool = False

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for first, last in self.ranges:
            a = "*" if first is None else str(first)
            if first == last:
                parts.append(a)
            else:
                parts.append(a + ":" + ("*" if last is None else str(last)))
        return ",".join(parts)

    @classmethod
    def from_ints(cls, numbers: Iterable[int]) -> SequenceSet:
        """Compact numbers into ranges: ``[1, 2, 3, 7]`` gives ``1:3,7``."""
        ranges: list[tuple[Bound, Bound]] = []
        start = prev = None
        for n in sorted(set(numbers)):
            if n < 1:
                raise ValueError("sequence numbers start at 1")
            if prev is not None and n == prev + 1:
                prev = n
                continue
            if start is not None:
                ranges.append((start, prev))
            start = prev = n
        if start is not None:
            ranges.append((start, prev))
        if not ranges:
            raise ValueError("a sequence set cannot be empty")
        return cls(tuple(ranges))

    def resolve(self, largest: int) -> list[int]:
        """Sorted unique members, ``*`` standing for ``largest``.

        Members above ``largest`` are kept (the caller intersects with what
        exists). ``3:*`` with largest 2 is ``2:3`` as RFC 9051 says. With an
        empty mailbox (``largest == 0``) any range involving ``*`` is empty.
        """
        if self.saved:
            raise ProtocolError("the saved search result $ cannot be resolved here")
        members: set[int] = set()
        for first, last in self.ranges:
            if (first is None or last is None) and largest <= 0:
                continue
            a = largest if first is None else first
            b = largest if last is None else last
            if a > b:
                a, b = b, a
            members.update(range(a, b + 1))
        return sorted(members)

    def __contains__(self, number: object) -> bool:
        """Membership with ``*`` meaning "any number at or beyond the bound"."""
        if not isinstance(number, int) or self.saved:
            return False
        for first, last in self.ranges:
            if first is None and last is None:
                continue
            if first is None or last is None:
                bound = first if last is None else last
                assert bound is not None
                if number >= bound:
                    return True
                continue
            if min(first, last) <= number <= max(first, last):
                return True
        return False


def parse_sequence_set(text: str) -> SequenceSet:
    """Parse a sequence set or ``$``; ParseError on 0, garbage or empty text."""
    if text == "$":
        return SequenceSet((), saved=True)
    if not _SEQ.match(text):
        raise ParseError("invalid sequence set")
    ranges: list[tuple[Bound, Bound]] = []
    for part in text.split(","):
        a, _, b = part.partition(":")
        first = None if a == "*" else int(a)
        last = first if not b else (None if b == "*" else int(b))
        for n in (first, last):
            if n is not None and n > MAX_NUMBER:
                raise ParseError("sequence number out of range")
        ranges.append((first, last))
    return SequenceSet(tuple(ranges))
