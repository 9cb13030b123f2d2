"""QRESYNC's VANISHED responses (RFC 7162 §3.2.10) as UID ranges, never as members.

``* VANISHED (EARLIER) 1:4294967295`` is one line from the upstream and would be four
billion integers if expanded: ranges are kept as they came, and a caller asks which of
the UIDs it holds fall inside them (``uids_within``), a binary search per UID.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from imapproxy.protocol import Atom, UntaggedData, Value, parse_sequence_set

#: The largest UID there can be (RFC 3501 §2.3.1.1: a 32-bit number).
MAX_UID = 2**32 - 1


def _text(value: Value) -> str:
    if isinstance(value, Atom):
        return value.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def vanished_ranges(data: UntaggedData) -> tuple[bool, list[tuple[int, int]]]:
    """``* VANISHED [(EARLIER)] uid-set`` as (earlier, inclusive UID ranges) (RFC 7162
    §3.2.10). Never expanded into members: the set may span the whole UID space."""
    values = list(data.values)
    earlier = False
    if values and isinstance(values[0], tuple):
        earlier = any(_text(v).upper() == "EARLIER" for v in values[0])
        values = values[1:]
    if not values:
        return earlier, []
    ranges = []
    for first, last in parse_sequence_set(_text(values[0])).ranges:
        lo, hi = first or MAX_UID, MAX_UID if last is None else last
        ranges.append((min(lo, hi), max(lo, hi)))
    return earlier, ranges


def vanished_earlier(responses: Iterable[UntaggedData]) -> tuple[tuple[int, int], ...]:
    """The UID ranges of the ``VANISHED (EARLIER)`` among responses, sorted."""
    ranges: list[tuple[int, int]] = []
    for data in responses:
        earlier, found = vanished_ranges(data)
        if earlier:
            ranges.extend(found)
    return tuple(sorted(ranges))


def uids_within(ranges: Iterable[tuple[int, int]], uids: Iterable[int]) -> set[int]:
    """Those of uids that fall in one of the inclusive ranges."""
    starts = sorted(ranges)
    if not starts:
        return set()
    los = [lo for lo, _ in starts]
    # Highest end among ranges starting at or before each one (ranges may overlap).
    reach, top = [], 0
    for _, hi in starts:
        top = max(top, hi)
        reach.append(top)
    out = set()
    for uid in uids:
        i = bisect.bisect_right(los, uid) - 1
        if i >= 0 and reach[i] >= uid:
            out.add(uid)
    return out
